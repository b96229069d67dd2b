"""From a promoted file to a session that answers, on the real embedded models (what the worker runs per call)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import llm

from workbench.core.store import MANIFEST_FILE, TURNS_FILE, typed_frame
from workbench.core.wer import wer
from workbench.models.audio import frames_to_mono_f32
from workbench.pipeline import DEFAULT_INSTRUCTIONS, SpeechTextConfig, speech_text_transform
from workbench.pipeline.promoted import load_promoted
from workbench.replay.voice import PlaybackSpeaker, RealtimeMicrophone, Utterance
from workbench.strategies.builtin import PlainStrategy
from workbench.worker import session_from_promoted
from workbench.workflows.promote import promote

pytestmark = pytest.mark.integration

QUESTION = "What time does the Main Street clinic open on Monday?"


@pytest.fixture
def promoted_file(tmp_path: Path) -> Path:
    """A promoted file made the real way: a finished run whose `plain` strategy passed its gate."""
    run = tmp_path / "runs" / "r-plain"
    run.mkdir(parents=True)
    suite = {"name": "worker-it", "strategies": {"plain": "plain"}, "gates": [{"metric": "error_rate", "max": 0.0}]}
    manifest = {"run_id": "r-plain", "status": "complete", "dataset": "datasets/dianachat_demo", "suite": suite}
    (run / MANIFEST_FILE).write_text(json.dumps(manifest))
    rows = [
        {
            "strategy": "plain",
            "mode": "text",
            "conversation_id": "c0",
            "turn_index": 0,
            "repetition": 0,
            "voice": "",
            "llm_ttfc_s": 0.5,
            "error_kind": None,
        }
    ]
    typed_frame(rows).to_parquet(run / TURNS_FILE, index=False)
    result = promote("r-plain", "plain", runs_dir=tmp_path / "runs", out=tmp_path / "worker" / "promoted.yaml")
    assert load_promoted(result.path).strategy == {"kind": "plain", "name": "plain"}
    return result.path


def _last_user(ctx: llm.ChatContext) -> llm.ChatMessage | None:
    return next((i for i in reversed(ctx.items) if isinstance(i, llm.ChatMessage) and i.role == "user"), None)


async def test_promoted_plain_session_answers_a_text_turn(stack, promoted_file: Path, network_guard) -> None:
    session, agent = session_from_promoted(promoted_file, stack, mode="text")
    strategy = session.llm
    assert isinstance(strategy, PlainStrategy) and strategy.name == "plain"
    assert agent.instructions == DEFAULT_INSTRUCTIONS
    await session.start(agent)
    try:
        result = await asyncio.wait_for(session.run(user_input=QUESTION), 90)
        replies = [e.item.text_content for e in result.events if e.type == "message" and e.item.role == "assistant"]
        assert len(replies) == 1 and len(replies[0].split()) >= 2
        user = _last_user(agent.chat_ctx)
        assert user is not None and user.text_content == QUESTION
        trace = strategy.trace_for(user.id)
        assert trace is not None and trace.error_kind is None and trace.fallback is None
        assert 0 < trace.first_chunk_s <= trace.total_s < 90
    finally:
        await session.aclose()
        await strategy.aclose()
    assert network_guard.attempts == []


async def test_promoted_session_answers_a_spoken_question(
    stack, promoted_file: Path, network_guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Piper speaks the question into the session's microphone; the agent hears it, answers, and speaks
    cleaned text (the promoted file's speech-text settings, applied once, by the session's TTS text transforms)."""
    tts = stack.tts()
    frames = [a.frame async for a in tts.synthesize(QUESTION)]
    speech = frames_to_mono_f32(frames, 16000)
    spoken: list[str] = []
    synth = tts.pcm_chunks
    monkeypatch.setattr(tts, "pcm_chunks", lambda text: (spoken.append(text), synth(text))[1])

    session, agent = session_from_promoted(promoted_file, stack, mode="voice")
    strategy = session.llm
    mic, speaker = RealtimeMicrophone(), PlaybackSpeaker(speed=4.0)  # the caller talks in real time
    session.input.audio, session.output.audio = mic, speaker
    heard: list[str] = []
    replies: list[llm.ChatMessage] = []
    done = asyncio.Event()

    def on_item(e: Any) -> None:
        if isinstance(e.item, llm.ChatMessage) and e.item.role == "user":
            heard.append(e.item.text_content or "")
        elif isinstance(e.item, llm.ChatMessage) and e.item.role == "assistant":
            replies.append(e.item)

    def on_state(e: Any) -> None:
        if e.old_state == "speaking" and e.new_state == "listening" and replies:
            done.set()

    session.on("conversation_item_added", on_item)
    session.on("agent_state_changed", on_state)
    await session.start(agent)
    try:
        await mic.play(Utterance(speech, len(speech) / 16000, "piper-question"))
        await asyncio.wait_for(done.wait(), 90)
        assert len(heard) == 1 and wer(QUESTION, heard[0]) < 0.35
        answer = replies[0].text_content or ""
        assert len(answer.split()) >= 2
        assert speaker.durations and speaker.durations[0] > 0.3  # the reply was spoken, not only written
        cleaned = "".join([c async for c in speech_text_transform(SpeechTextConfig())(_one(answer))])
        assert " ".join(" ".join(spoken).split()) == " ".join(cleaned.split())

        spoken.clear()
        await session.say("Please ask **Dr.** Lee at DianaChat on Main St. 😀")
        # "St." is replaced with its period: the abbreviation ends the sentence here
        assert " ".join(" ".join(spoken).split()) == "Please ask Doctor Lee at Diana Chat on Main Street"
    finally:
        mic.close()
        await session.aclose()
        await strategy.aclose()
    assert network_guard.attempts == []


async def _one(text: str):
    yield text
