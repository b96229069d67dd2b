"""Voice replay measured against components with known delays (fast: scripted LLM, fake speech stack)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from workbench.config import EndpointConfig, TurnConfig, WorkbenchConfig
from workbench.models import ModelStack
from workbench.replay import Suite, arun, load_run
from workbench.replay.suite import VoiceOptions
from workbench.testing.fakes import EnergyVAD, FixedDelaySTT, FixedDelayTTS
from workbench.testing.scripted_endpoint import Script, ScriptedEndpoint

LEAD, SPEECH, TAIL = 0.3, 1.0, 1.2
VAD_SILENCE, STT_DELAY, LLM_TTFT, TTS_TTFB, ENDPOINTING = 0.3, 0.1, 0.15, 0.08, 0.2


def voice_dataset(root: Path, turns: int = 2, broken: dict[int, bytes] | None = None) -> Path:
    (root / "knowledge").mkdir(parents=True)
    (root / "knowledge" / "a.md").write_text("Open 8 am to 6 pm.\n")
    (root / "audio").mkdir()
    rate = 16000
    t = np.arange(int(SPEECH * rate)) / rate
    speech = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)  # "speech" with an exactly known end
    pcm = np.concatenate([np.zeros(int(LEAD * rate)), speech, np.zeros(int(TAIL * rate))]).astype(np.float32)
    conv_turns = []
    for i in range(turns):
        rel = f"audio/c0_{i}.wav"
        if broken and i in broken:
            (root / rel).write_bytes(broken[i])
        else:
            sf.write(root / rel, pcm, rate, subtype="PCM_16")
        conv_turns.append({
            "user": f"question {i}", "reference": "r", "contexts": [], "facts": [], "audio": {"piper": rel},
            "audio_meta": {"piper": {"speech_start_s": LEAD, "speech_end_s": LEAD + SPEECH}},
        })  # fmt: skip
    (root / "conversations.jsonl").write_text(json.dumps({"id": "c0", "tags": [], "turns": conv_turns}) + "\n")
    return root


def fake_speech_stack(ep: ScriptedEndpoint, tmp_path: Path, stt: FixedDelaySTT) -> ModelStack:
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


async def test_voice_to_voice_adds_up_to_the_known_component_delays(tmp_path: Path) -> None:
    ds = voice_dataset(tmp_path / "ds", turns=3)
    stt = FixedDelaySTT(delay_s=STT_DELAY, texts=["question 0", "question 1", "question 2"])
    with ScriptedEndpoint(Script(ttft_s=LLM_TTFT, text="Sure, we open at eight.")) as ep:
        suite = Suite(dataset=ds, mode="voice", voice=VoiceOptions(variants=["piper"]))
        res = await arun(suite, runs_dir=tmp_path / "runs", stack=fake_speech_stack(ep, tmp_path, stt), progress=False)
    df = load_run(res.path)
    assert len(df) == 3 and df["error_kind"].isna().all(), df[["error_kind", "error"]]
    assert df["realtime"].all()
    assert df["transcript"].tolist() == ["question 0", "question 1", "question 2"]
    assert (df["wer"] == 0).all()
    # the end of turn comes after the VAD's silence window plus the transcript (endpointing runs meanwhile)
    expected_eou = VAD_SILENCE + max(STT_DELAY, ENDPOINTING - VAD_SILENCE)
    expected_v2v = expected_eou + LLM_TTFT + TTS_TTFB
    print(df[["eou_delay_s", "stt_s", "llm_ttfc_s", "tts_ttfb_s", "v2v_s"]])
    assert (df["stt_s"] - (VAD_SILENCE + STT_DELAY)).abs().max() < 0.040
    assert (df["llm_ttfc_s"] - LLM_TTFT).abs().max() < 0.040
    assert (df["v2v_s"] - expected_v2v).abs().max() < 0.040, (df["v2v_s"].tolist(), expected_v2v)
    assert (df["agent_audio_s"] > 0).all()


async def test_bad_audio_gives_an_error_row_and_the_conversation_goes_on(tmp_path: Path) -> None:
    ds = voice_dataset(tmp_path / "ds", turns=3, broken={1: b"RIFF\x00\x00garbage"})
    stt = FixedDelaySTT(delay_s=0.01, texts=["question 0", "question 2"])
    with ScriptedEndpoint(Script(text="Okay.")) as ep:
        suite = Suite(dataset=ds, mode="voice", voice=VoiceOptions(variants=["piper"], realtime=False))
        res = await arun(suite, runs_dir=tmp_path / "runs", stack=fake_speech_stack(ep, tmp_path, stt), progress=False)
    df = load_run(res.path).sort_values("turn_index")
    assert df["error_kind"].fillna("").tolist() == ["", "bad_audio", ""]
    assert df["answer"].tolist()[2] == "Okay."
    # faster-than-real-time rows carry no latency figures
    assert not df["realtime"].any() and df["v2v_s"].isna().all() and df["llm_ttfc_s"].isna().all()


@pytest.fixture(autouse=True)
def _quiet_livekit_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="livekit.agents")
