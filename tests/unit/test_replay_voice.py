"""Voice replay measured against components with known delays (fast: scripted LLM, fake speech stack)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from workbench.faults.endpoint import Script, ScriptedEndpoint
from workbench.faults.speech import FixedDelaySTT
from workbench.testing.worlds import (
    ENDPOINTING,
    LLM_TTFT,
    STT_DELAY,
    TTS_TTFB,
    VAD_SILENCE,
    fake_speech_stack,
    voice_dataset,
)
from workbench.workflows import Suite, arun, load_run
from workbench.workflows.suite import VoiceOptions


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


def _wav(x: np.ndarray, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="WAV", subtype=subtype)
    return buf.getvalue()


async def test_truncated_and_nan_audio_are_error_rows_and_the_run_goes_on(tmp_path: Path) -> None:
    """Both would otherwise replay as something (shorter audio, NaN clipped to noise): each is its turn's error."""
    tone = (0.3 * np.sin(np.arange(16000) / 5.0)).astype(np.float32)
    truncated = _wav(tone, "PCM_16")[:-8000]  # the header still declares the whole second
    nan = tone.copy()
    nan[4000] = np.nan
    ds = voice_dataset(tmp_path / "ds", turns=4, broken={1: truncated, 2: _wav(nan, "FLOAT")})
    stt = FixedDelaySTT(delay_s=0.01, texts=["question 0", "question 3"])
    with ScriptedEndpoint(Script(text="Okay.")) as ep:
        suite = Suite(dataset=ds, mode="voice", voice=VoiceOptions(variants=["piper"], realtime=False))
        res = await arun(suite, runs_dir=tmp_path / "runs", stack=fake_speech_stack(ep, tmp_path, stt), progress=False)
    df = load_run(res.path).sort_values("turn_index")
    assert df["error_kind"].fillna("").tolist() == ["", "bad_audio", "bad_audio", ""]
    errors = df["error"].tolist()
    assert "c0_1.wav: truncated: the header declares 32000 bytes of audio data, the file holds 24000" in errors[1]
    assert "c0_2.wav: contains NaN or infinite samples (first at 0.250 s)" in errors[2]
    assert df["answer"].tolist() == ["Okay.", "", "", "Okay."]
    assert df["transcript"].tolist()[3] == "question 3"


@pytest.fixture(autouse=True)
def _quiet_livekit_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="livekit.agents")
