"""Tiny datasets and model stacks that tests and benchmarks build their runs on.

Text worlds answer through a :class:`ScriptedEndpoint`; the voice world pairs it with the speech components
of known delays, so measured latencies can be checked against the sum of those delays.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from livekit.agents import vad

from workbench.core.config import EndpointConfig, TurnConfig, WorkbenchConfig
from workbench.faults.endpoint import EndpointProcess, ScriptedEndpoint
from workbench.faults.speech import EnergyVAD, FixedDelaySTT, FixedDelayTTS, _EnergyVADStream
from workbench.models import ModelStack


def sqlite_rows(db: Path, sql: str = "SELECT * FROM bookings ORDER BY id") -> list[dict[str, Any]]:
    """What a tool-using agent left in its SQLite store (the booking demo's ``bookings`` by default), as dicts."""
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql)]
    finally:
        con.close()


async def llm_transport_s(base_url: str, ttft_s: float, requests: int = 5) -> float:
    """What reaching a scripted endpoint through the harness's own client adds to its scripted first-token delay,
    on this machine now (median of a few streamed requests, after one to connect): the fixed part of every LLM
    time a replay measures, which the measurement-validity tests add to the delays they inject. It is real
    latency (HTTP over loopback, the SDK), not measurement error, and grows on a loaded shared machine."""
    import statistics
    import time

    from workbench.models.chat_client import chat_client

    client = chat_client(base_url=base_url, api_key="unused", timeout_s=10.0)
    firsts: list[float] = []
    try:
        for _ in range(requests + 1):
            t0 = time.perf_counter()
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "calibrate"}], stream=True
            )
            async for _chunk in stream:
                firsts.append(time.perf_counter() - t0)
                break
            await stream.close()
    finally:
        await client.close()
    return max(0.0, statistics.median(firsts[1:]) - ttft_s)


# the voice world's audio (seconds of silence, tone, silence) and its components' delays
LEAD, SPEECH, TAIL = 0.3, 1.0, 1.2
VAD_SILENCE, STT_DELAY, LLM_TTFT, TTS_TTFB, ENDPOINTING = 0.3, 0.1, 0.15, 0.08, 0.2


def make_dataset(root: Path, conversations: int = 3, turns: int = 2, extra_lines: list[str] | None = None) -> Path:
    """A text dataset: ``conversations`` of ``turns`` questions ``"question c.t"``, one knowledge file, and
    ``extra_lines`` appended verbatim (to test malformed lines)."""
    (root / "knowledge").mkdir(parents=True)
    (root / "knowledge" / "hours.md").write_text("# Hours\n\nWe are open 8 am to 6 pm on weekdays.\n")
    lines = []
    for c in range(conversations):
        conv = {
            "id": f"c{c}",
            "tags": ["t"],
            "turns": [
                {
                    "user": f"question {c}.{t}",
                    "reference": f"answer {c}.{t}",
                    "contexts": ["knowledge/hours.md"],
                    "facts": ["8 am"],
                }
                for t in range(turns)
            ],
        }
        lines.append(json.dumps(conv))
    lines += extra_lines or []
    (root / "conversations.jsonl").write_text("\n".join(lines) + "\n")
    return root


def scripted_stack(ep: ScriptedEndpoint, tmp_path: Path) -> ModelStack:
    """A model stack whose LLM is ``ep``, with its state under ``tmp_path / "state"``."""
    llm = EndpointConfig(kind="openai", base_url=ep.base_url, model="scripted-model")
    return ModelStack(WorkbenchConfig(llm=llm, state_dir=tmp_path / "state"))


def voice_dataset(root: Path, turns: int = 2, broken: dict[int, bytes] | None = None) -> Path:
    """One voice conversation (variant ``piper``): each turn a 220 Hz tone between silences, so the end of
    speech is known exactly; ``broken`` replaces the audio of the given turns with these bytes."""
    (root / "knowledge").mkdir(parents=True)
    (root / "knowledge" / "a.md").write_text("Open 8 am to 6 pm.\n")
    (root / "audio").mkdir()
    rate = 16000
    t = np.arange(int(SPEECH * rate)) / rate
    speech = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    pcm = np.concatenate([np.zeros(int(LEAD * rate)), speech, np.zeros(int(TAIL * rate))]).astype(np.float32)
    conv_turns = []
    for i in range(turns):
        rel = f"audio/c0_{i}.wav"
        if broken and i in broken:
            (root / rel).write_bytes(broken[i])
        else:
            sf.write(root / rel, pcm, rate, subtype="PCM_16")
        conv_turns.append(
            {
                "user": f"question {i}",
                "reference": "r",
                "contexts": [],
                "facts": [],
                "audio": {"piper": rel},
                "audio_meta": {"piper": {"speech_start_s": LEAD, "speech_end_s": LEAD + SPEECH}},
            }
        )
    (root / "conversations.jsonl").write_text(json.dumps({"id": "c0", "tags": [], "turns": conv_turns}) + "\n")
    return root


def fake_speech_stack(ep: ScriptedEndpoint | EndpointProcess, tmp_path: Path, stt: FixedDelaySTT) -> ModelStack:
    """A model stack for the voice world: LLM ``ep``, the energy VAD, ``stt`` and a TTS of known first-audio delay."""
    cfg = WorkbenchConfig(
        llm=EndpointConfig(kind="openai", base_url=ep.base_url, model="m"),
        turn=TurnConfig(mode="vad", min_endpointing_delay=ENDPOINTING, max_endpointing_delay=1.0),
        state_dir=tmp_path / "state",
    )
    stack = ModelStack(cfg)
    stack.vad = lambda: EnergyVAD(silence_s=VAD_SILENCE)  # type: ignore[method-assign]
    stack.stt = lambda: stt  # type: ignore[method-assign]
    stack.tts = lambda kind=None: FixedDelayTTS(ttfb_s=TTS_TTFB)  # type: ignore[method-assign]
    return stack


def barge_in_dataset(root: Path, noise_s: float = 0.2) -> Path:
    """One voice conversation (variant ``piper``) with two barge-in turns: a question, then a caller who talks
    over the reply 0.8 s in (0.3 s of lead, then 1 s of a 220 Hz tone), then a ``noise_s`` burst of noise 0.5 s
    into the next reply, marked ``expect_yield: false`` (the agent should talk through it)."""
    (root / "knowledge").mkdir(parents=True)
    (root / "knowledge" / "a.md").write_text("Open 8 am to 6 pm.\n")
    (root / "audio").mkdir()
    rate = 16000
    t = np.arange(int(SPEECH * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    noise = (0.3 * np.random.default_rng(0).uniform(-1, 1, int(noise_s * rate))).astype(np.float32)
    clips = [(LEAD, tone), (LEAD, tone), (0.0, noise)]
    extra: list[dict[str, object]] = [{}, {"barge_in_s": 0.8}, {"barge_in_s": 0.5, "expect_yield": False}]
    conv_turns = []
    for i, ((lead, speech), more) in enumerate(zip(clips, extra, strict=True)):
        rel = f"audio/b0_{i}.wav"
        pcm = np.concatenate([np.zeros(int(lead * rate)), speech, np.zeros(int(0.5 * rate))]).astype(np.float32)
        sf.write(root / rel, pcm, rate, subtype="PCM_16")
        span = {"speech_start_s": lead, "speech_end_s": lead + len(speech) / rate}
        conv_turns.append(
            {"user": f"question {i}", "reference": "r", "audio": {"piper": rel}, "audio_meta": {"piper": span}, **more}
        )
    (root / "conversations.jsonl").write_text(json.dumps({"id": "b0", "tags": [], "turns": conv_turns}) + "\n")
    return root


def pause_dataset(root: Path, pauses: dict[str, float], phrase_s: float = 0.6) -> Path:
    """Voice conversations (variant ``piper``) of one turn each: two ``phrase_s`` tones with a pause between them,
    ``pauses`` mapping a conversation id to its pause (seconds); the end of speech is the second phrase's end."""
    (root / "knowledge").mkdir(parents=True)
    (root / "knowledge" / "a.md").write_text("Open 8 am to 6 pm.\n")
    (root / "audio").mkdir()
    rate = 16000
    t = np.arange(int(phrase_s * rate)) / rate
    phrase = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    lines = []
    for cid, pause in pauses.items():
        rel = f"audio/{cid}_0.wav"
        parts = [np.zeros(int(LEAD * rate)), phrase, np.zeros(int(pause * rate)), phrase, np.zeros(int(TAIL * rate))]
        sf.write(root / rel, np.concatenate(parts).astype(np.float32), rate, subtype="PCM_16")
        span = {"speech_start_s": LEAD, "speech_end_s": LEAD + 2 * len(phrase) / rate + int(pause * rate) / rate}
        turn = {"user": "question", "reference": "r", "audio": {"piper": rel}, "audio_meta": {"piper": span}}
        lines.append(json.dumps({"id": cid, "tags": [], "turns": [turn]}))
    (root / "conversations.jsonl").write_text("\n".join(lines) + "\n")
    return root


class RawEnergyVAD(EnergyVAD):
    """:class:`EnergyVAD` that also reports the speech or silence accumulated since the last change, as Silero does:
    LiveKit asks a streaming turn detector for a prediction only once that silence reaches 0.2 s."""

    def stream(self) -> vad.VADStream:
        s = _EnergyVADStream(self)
        s._event_ch = _RawAccumulated(s._event_ch)  # type: ignore[assignment]
        return s


class _RawAccumulated:
    """The stream's event channel, filling in ``raw_accumulated_speech``/``_silence`` on each inference event."""

    def __init__(self, ch: object) -> None:
        self._ch = ch

    def send_nowait(self, ev: vad.VADEvent) -> None:
        if ev.type == vad.VADEventType.INFERENCE_DONE:
            loud = ev.probability > 0.5
            ev.raw_accumulated_speech = ev.speech_duration if loud else 0.0
            ev.raw_accumulated_silence = 0.0 if loud else ev.silence_duration
        self._ch.send_nowait(ev)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._ch, name)
