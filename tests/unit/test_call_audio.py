"""The call as the caller hears it: the stereo recording, what its signal says, and barge-in turns."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from workbench.analysis.report import render_report
from workbench.core.config import TurnConfig
from workbench.faults.endpoint import Script, ScriptedEndpoint
from workbench.faults.speech import FixedDelaySTT, FixedDelayTTS
from workbench.replay.call import AgentReply, continue_call, heard_columns, render, wav_bytes
from workbench.replay.dataset import parse_conversations
from workbench.scoring.persist import load_scored
from workbench.testing.worlds import ENDPOINTING, STT_DELAY, TTS_TTFB, barge_in_dataset, fake_speech_stack
from workbench.workflows import Suite, arun, load_run
from workbench.workflows.suite import VoiceOptions

RATE = 16000


def _tone(seconds: float, amp: float = 0.3) -> np.ndarray:
    return (amp * 32767 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * RATE)) / RATE)).astype(np.int16)


def test_the_signal_gives_heard_latency_overlaps_and_long_silences() -> None:
    """Caller speaks 0.3-1.3 s; the agent answers at 2.0 s for 1 s, and the caller talks over it at 2.5 s."""
    caller = [np.zeros(int(0.3 * RATE), np.int16), _tone(1.0), np.zeros(int(1.2 * RATE), np.int16), _tone(0.2)]
    caller.append(np.zeros(int(3.0 * RATE), np.int16))
    reply = AgentReply(start=102.0, chunks=[_tone(1.0, 0.2)], played_s=1.0, end=103.0)
    call = render(caller, 100.0, [reply], RATE)
    assert call.shape == (int(5.7 * RATE), 2)
    first = heard_columns(call, RATE, 0.0, 2.5)  # the first turn: up to where the next one starts
    assert first["heard_v2v_s"] == pytest.approx(0.7, abs=0.002)
    assert first["overlaps"] == 0 and first["long_silences"] == 0
    over = heard_columns(call, RATE, 2.5, 5.7)  # the caller talks over the reply, which goes on: no onset after
    assert over["heard_v2v_s"] is None
    assert over["overlaps"] == 1 and over["overlap_s"] == pytest.approx(0.2, abs=0.011)
    assert over["long_silences"] == 1  # 3.0-5.7 s: neither side audible for 2.7 s
    # a reply cut short is heard only as far as it played
    cut = render(caller, 100.0, [AgentReply(102.0, [_tone(1.0, 0.2)], played_s=0.4, end=102.4)], RATE)
    assert not np.any(np.abs(cut[int(2.45 * RATE) :, 1]) > 0)


def test_a_resumed_call_continues_the_interrupted_recording() -> None:
    """The interrupted session's call, then the resumed one's, in one file; the resumed part moves by the first's
    length; a recording at another rate is refused rather than played at the wrong speed."""
    first = np.zeros((16000, 2), np.float32)
    first[:, 0] = 0.25
    second = np.zeros((8000, 2), np.float32)
    second[:, 1] = -0.5
    joined, moved = continue_call(wav_bytes(first, 16000), wav_bytes(second, 16000))
    audio, rate = sf.read(io.BytesIO(joined), dtype="float32")
    assert rate == 16000 and moved == 1.0 and audio.shape == (24000, 2)
    assert np.allclose(audio[:16000, 0], 0.25, atol=1e-3) and np.allclose(audio[16000:, 1], -0.5, atol=1e-3)
    with pytest.raises(ValueError, match="8000 Hz"):
        continue_call(wav_bytes(first, 16000), wav_bytes(second, 8000))


def test_barge_in_fields_are_validated() -> None:
    first = '{"id": "a", "turns": [{"user": "hi", "barge_in_s": 0.5}]}'
    no_barge = '{"id": "b", "turns": [{"user": "hi"}, {"user": "mm", "expect_yield": false}]}'
    negative = '{"id": "c", "turns": [{"user": "hi"}, {"user": "no", "barge_in_s": -1}]}'
    good = '{"id": "d", "turns": [{"user": "hi"}, {"user": "mm", "barge_in_s": 0.5, "expect_yield": false}]}'
    convs, problems = parse_conversations("\n".join([first, no_barge, negative, good]).encode())
    assert [c.id for c in convs] == ["d"] and convs[0].turns[1].barge_in_s == 0.5
    assert [p.line for p in problems] == [1, 2, 3], problems
    assert "first turn" in problems[0].message and "needs barge_in_s" in problems[1].message


LONG_REPLY = "Sure, we open at eight and close at six on every weekday."  # 12 words: 3.6 s of agent audio


async def _barge_in_run(tmp_path: Path, texts: list[str], **turn: Any) -> tuple[pd.DataFrame, Path]:
    """The barge-in world (:func:`barge_in_dataset`) replayed with a long reply and the ``turn`` settings given:
    its rows in turn order and the run folder."""
    ds = barge_in_dataset(tmp_path / "ds", noise_s=0.2)
    with ScriptedEndpoint(Script(ttft_s=0.05, text=LONG_REPLY)) as ep:
        stack = fake_speech_stack(ep, tmp_path, FixedDelaySTT(delay_s=STT_DELAY, texts=texts))
        stack.config.turn = TurnConfig(mode="vad", min_endpointing_delay=ENDPOINTING, max_endpointing_delay=1.0, **turn)
        stack.tts = lambda kind=None: FixedDelayTTS(ttfb_s=TTS_TTFB, seconds_per_word=0.3)  # type: ignore[method-assign]
        suite = Suite(dataset=ds, mode="voice", voice=VoiceOptions(variants=["piper"]))
        res = await arun(suite, runs_dir=tmp_path / "runs", stack=stack, progress=False)
    return load_run(res.path).sort_values("turn_index").reset_index(drop=True), res.path


async def test_the_agent_yields_to_a_barge_in_within_the_bound_and_talks_through_noise(tmp_path: Path) -> None:
    """Turn 1 talks over the reply 0.8 s in: the agent stops ``min_interruption_duration`` after the caller's
    first words (plus a frame or two); turn 2 is a 0.2 s noise burst: the agent talks through it. The call
    recording holds both, and its heard latency matches v2v_s on every replied turn."""
    bound = 0.5
    df, run_path = await _barge_in_run(tmp_path, ["question 0", "question 1", ""], min_interruption_duration=bound)
    assert df["error_kind"].isna().all(), df[["error_kind", "error"]]
    barge, noise = df.iloc[1], df.iloc[2]
    assert barge["yielded"] and not barge["false_interruption"]
    # the session hears each frame as it starts playing, so up to one frame (20 ms) early: docs/latency.md
    assert bound - 0.04 <= barge["yield_s"] <= bound + 0.1, barge["yield_s"]
    assert df.iloc[0]["interruptions"] == 1  # the reply the caller talked over
    assert noise["yielded"] is np.False_ or noise["yielded"] is False
    assert noise["false_interruption"] is np.False_ or noise["false_interruption"] is False
    assert pd.isna(noise["yield_s"])
    assert df.iloc[1]["interruptions"] == 0  # the reply the noise played over went on to its end
    assert barge["overlaps"] >= 1 and noise["overlaps"] == 1
    # the recording: stereo, one per conversation, and its signal agrees with the event clock
    (rel,) = df["call_audio"].unique()
    audio, rate = sf.read(run_path / rel)
    assert audio.ndim == 2 and audio.shape[1] == 2 and rate == RATE
    replied = df.iloc[:2]
    assert (replied["heard_v2v_s"] - replied["v2v_s"]).abs().max() < 0.020
    assert df["call_offset_s"].is_monotonic_increasing
    # the barge-in started where the dataset says, into the reply (its first frame), to the next 20 ms frame
    reply_start = df.loc[0, "call_offset_s"] + df.loc[0, "speech_end_s"] + df.loc[0, "v2v_s"]
    assert 0.8 - 0.001 <= df.loc[1, "call_offset_s"] - reply_start <= 0.8 + 0.021
    # the report plays each turn's stretch of the call beside the turn
    page = render_report(load_scored(run_path))
    assert page.count("call as heard") == 3 and "(caller left, agent right)" in page


async def test_a_barge_in_the_agent_yields_to_only_once_transcribed_keeps_its_words(tmp_path: Path) -> None:
    """With ``min_interruption_words: 2`` the agent stops only when the caller's words are transcribed, after the
    talked-over turn's reply was still playing: the barge-in's transcript and end of turn belong to its own row,
    not to the turn it talked over, and the agent stopped after those words, not before."""
    df, _ = await _barge_in_run(tmp_path, ["question zero", "question one", ""], min_interruption_words=2)
    assert df["error_kind"].isna().all(), df[["error_kind", "error"]]
    first, barge = df.iloc[0], df.iloc[1]
    assert (first["transcript"], first["user_turns"]) == ("question zero", 1)
    assert (barge["transcript"], barge["user_turns"]) == ("question one", 1)
    # the agent stopped after the caller's 1 s of speech had ended and been transcribed
    assert barge["yielded"] and barge["yield_s"] > 1.0 + STT_DELAY and first["interruptions"] == 1
    assert barge["v2v_s"] > 0 and barge["answer"]


@pytest.fixture(autouse=True)
def _quiet_livekit_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="livekit.agents")
