"""Voice replay measured against components with known delays (fast: scripted LLM, fake speech stack)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from workbench.core.schema import CRITICAL_PATH, SLICES, critical_path
from workbench.faults.endpoint import Script, ScriptedEndpoint
from workbench.faults.speech import FixedDelaySTT
from workbench.models.smart_turn import SmartTurnStream
from workbench.testing.worlds import (
    ENDPOINTING,
    LLM_TTFT,
    STT_DELAY,
    TTS_TTFB,
    VAD_SILENCE,
    RawEnergyVAD,
    fake_speech_stack,
    llm_transport_s,
    pause_dataset,
    voice_dataset,
)
from workbench.workflows import Suite, arun, load_run
from workbench.workflows.suite import VoiceOptions


async def test_voice_to_voice_adds_up_to_the_known_component_delays(tmp_path: Path) -> None:
    ds = voice_dataset(tmp_path / "ds", turns=3)
    stt = FixedDelaySTT(delay_s=STT_DELAY, texts=["question 0", "question 1", "question 2"])
    with ScriptedEndpoint(Script(ttft_s=LLM_TTFT, text="Sure, we open at eight.")) as ep:
        transport = await llm_transport_s(ep.base_url, LLM_TTFT)  # loopback HTTP and the SDK: part of the LLM's time
        suite = Suite(dataset=ds, mode="voice", voice=VoiceOptions(variants=["piper"]))
        res = await arun(suite, runs_dir=tmp_path / "runs", stack=fake_speech_stack(ep, tmp_path, stt), progress=False)
    df = load_run(res.path)
    assert len(df) == 3 and df["error_kind"].isna().all(), df[["error_kind", "error"]]
    assert df["realtime"].all()
    assert df["transcript"].tolist() == ["question 0", "question 1", "question 2"]
    assert (df["wer"] == 0).all()
    # the end of turn comes after the VAD's silence window plus the transcript (endpointing runs meanwhile)
    expected_eou = VAD_SILENCE + max(STT_DELAY, ENDPOINTING - VAD_SILENCE)
    expected_v2v = expected_eou + LLM_TTFT + transport + TTS_TTFB
    assert (df["stt_s"] - (VAD_SILENCE + STT_DELAY)).abs().max() < 0.040
    assert (df["llm_ttfc_s"] - LLM_TTFT - transport).abs().max() < 0.040
    # each hand-off (end of turn, LLM request, TTS) costs a few ms of scheduling more than its injected delay, 10-20
    # on a slow shared host, and voice-to-voice carries them all: twice a stage's budget
    assert (df["v2v_s"] - expected_v2v).abs().max() < 0.080, (df["v2v_s"].tolist(), expected_v2v)
    assert (df["agent_audio_s"] > 0).all()
    # the call as heard: one stereo recording, and its signal gives voice-to-voice as the event clock does
    (rel,) = df["call_audio"].unique()
    audio, rate = sf.read(res.path / rel)
    assert audio.shape[1] == 2 and rate == 16000
    assert (df["heard_v2v_s"] - df["v2v_s"]).abs().max() < 0.020, df[["heard_v2v_s", "v2v_s"]]
    assert (df["overlaps"] == 0).all() and (df["long_silences"] == 0).all()
    # every stage of the critical path was measured, so nothing is left unattributed
    assert df[list(CRITICAL_PATH)].notna().all().all()
    assert df["unattributed_s"].abs().max() < 0.020


# a two-sentence answer: the first chunk after LLM_TTFT, the full stop SENTENCE_TOKENS - 1 gaps later; LiveKit's
# sentence tokenizer hands the sentence to TTS when the next sentence begins, one gap after the full stop
GAP = 0.05
FIRST_SENTENCE = ["Sure", ",", " we", " open", " at", " eight", "."]
TWO_SENTENCES = [*FIRST_SENTENCE, " Would you like to book a visit?"]
FIRST_SENTENCE_AFTER = len(FIRST_SENTENCE) * GAP  # after the first chunk


async def test_every_critical_path_stage_matches_its_known_delay_and_they_add_up(tmp_path: Path) -> None:
    """End of turn, STT final, LLM first chunk, LLM first sentence, TTS first audio and playout, each against
    the delay injected for it, and voice-to-voice as their sum: what the report's breakdown draws."""
    ds = voice_dataset(tmp_path / "ds", turns=3)
    stt = FixedDelaySTT(delay_s=STT_DELAY, texts=["question 0", "question 1", "question 2"])
    with ScriptedEndpoint(Script(ttft_s=LLM_TTFT, tokens=TWO_SENTENCES, gap_s=GAP)) as ep:
        transport = await llm_transport_s(ep.base_url, LLM_TTFT)  # loopback HTTP and the SDK: part of the LLM's time
        suite = Suite(dataset=ds, mode="voice", voice=VoiceOptions(variants=["piper"]))
        res = await arun(suite, runs_dir=tmp_path / "runs", stack=fake_speech_stack(ep, tmp_path, stt), progress=False)
    df = load_run(res.path)
    assert len(df) == 3 and df["error_kind"].isna().all(), df[["error_kind", "error"]]
    expected_eou = VAD_SILENCE + max(STT_DELAY, ENDPOINTING - VAD_SILENCE)
    known = {
        "stt_s": VAD_SILENCE + STT_DELAY,
        "eou_delay_s": expected_eou,
        "llm_ttfc_s": LLM_TTFT + transport,
        "llm_ttfs_s": LLM_TTFT + transport + FIRST_SENTENCE_AFTER,
        "tts_ttfb_s": TTS_TTFB,
        "v2v_s": expected_eou + LLM_TTFT + transport + FIRST_SENTENCE_AFTER + TTS_TTFB,
    }
    for column, value in known.items():
        budget = 0.080 if column == "v2v_s" else 0.040  # voice-to-voice carries every stage's scheduling
        assert (df[column] - value).abs().max() < budget, (column, df[column].tolist(), value)
    # the wait for the first sentence, free of the transport both LLM figures share
    assert ((df["llm_ttfs_s"] - df["llm_ttfc_s"]) - FIRST_SENTENCE_AFTER).abs().max() < 0.020
    # hand-offs with no injected delay: the hook and scheduling, and the replay's speaker (plays at once)
    assert df["llm_start_s"].between(0.0, 0.030).all(), df["llm_start_s"].tolist()
    assert df["playout_s"].between(-0.005, 0.020).all(), df["playout_s"].tolist()
    # the stages tile voice-to-voice: each starts where the one before ended
    assert (df[list(CRITICAL_PATH)].sum(axis=1) + df["unattributed_s"] - df["v2v_s"]).abs().max() < 1e-6
    assert df["unattributed_s"].abs().max() < 0.020
    # causality: the turn ends only with a transcript, a sentence only after the first chunk
    assert (df["stt_s"] <= df["eou_delay_s"]).all() and (df["llm_ttfc_s"] < df["llm_ttfs_s"]).all()
    turn = json.loads(df["lk_metrics"].iloc[0])["turn"]  # LiveKit's own per-turn report, kept beside ours
    assert {"end_of_turn_delay", "stopped_speaking_at"} <= set(turn["user"])
    assert {"llm_node_ttft", "llm_node_ttfs", "tts_node_ttfb"} <= set(turn["assistant"])


async def test_a_pause_longer_than_the_end_of_turn_cuts_the_caller_off_and_a_short_one_does_not(tmp_path: Path) -> None:
    """Two phrases with a pause between them. The end of turn comes VAD_SILENCE + STT_DELAY after the first phrase
    (ENDPOINTING is shorter): a 0.8 s pause outlasts it, so LiveKit ends the turn mid-utterance (cut_off, and the
    rest of the caller's words become a second user turn); a 0.15 s pause is not even a VAD end of speech."""
    ds = pause_dataset(tmp_path / "ds", {"long": 0.8, "short": 0.15})
    stt = FixedDelaySTT(delay_s=STT_DELAY, text="question")
    with ScriptedEndpoint(Script(ttft_s=LLM_TTFT, text="Sure.")) as ep:
        suite = Suite(dataset=ds, mode="voice", voice=VoiceOptions(variants=["piper"]))
        res = await arun(suite, runs_dir=tmp_path / "runs", stack=fake_speech_stack(ep, tmp_path, stt), progress=False)
    df = load_run(res.path).set_index("conversation_id")
    assert df["error_kind"].isna().all(), df[["error_kind", "error"]]
    short, long = df.loc["short"], df.loc["long"]
    assert not short["cut_off"] and short["user_turns"] == 1
    assert short["eou_delay_s"] > 0 and short["v2v_s"] > short["eou_delay_s"]
    assert long["cut_off"] and long["user_turns"] == 2
    # the agent answered the first phrase before the caller had finished: its audio started before the end of speech
    assert long["v2v_s"] < 0
    # the harness waited for the rest of the turn: its own end of turn came after the caller's end of speech
    assert long["eou_delay_s"] > 0
    assert long["transcript"] == "question question"


class _SpeechLengthTurn:
    """A scripted audio turn detector behind the Smart Turn stream: "done" once it has heard more than ``done_after``
    seconds of speech since the last committed turn, "not done" before."""

    model, provider, threshold, prediction_timeout = "scripted", "test", 0.5, 1.0

    def __init__(self, done_after: float) -> None:
        self.done_after = done_after
        self.predictions: list[float] = []

    def probability(self, audio: np.ndarray) -> float:
        win = 160
        n = len(audio) // win
        loud = int((np.sqrt(np.mean(audio[: n * win].reshape(n, win) ** 2, axis=1)) > 0.01).sum()) if n else 0
        p = 0.9 if loud * win / 16000 > self.done_after else 0.1
        self.predictions.append(p)
        return p

    def stream(self, **_: object) -> SmartTurnStream:
        return SmartTurnStream(self)  # type: ignore[arg-type]


async def test_an_audio_turn_detector_holds_the_turn_through_a_pause_it_judges_unfinished(tmp_path: Path) -> None:
    """The same 0.8 s pause that cuts the VAD-only caller off: a streaming turn detector (the Smart Turn stream, with a
    scripted model) says "not done" after the first phrase, so LiveKit waits its maximum delay (1.0 s), the caller
    resumes within it, and the turn ends once, after the whole utterance. (The transcript gate works with VAD turn
    detection only: here the minimum delay must cover the VAD silence and the STT, or the end of speech would be
    committed on the first phrase's transcript alone.)"""
    ds = pause_dataset(tmp_path / "ds", {"long": 0.8})
    stt = FixedDelaySTT(delay_s=STT_DELAY, text="question")
    detector = _SpeechLengthTurn(done_after=0.9)  # one phrase is 0.6 s, both 1.2 s
    with ScriptedEndpoint(Script(ttft_s=LLM_TTFT, text="Sure.")) as ep:
        stack = fake_speech_stack(ep, tmp_path, stt)
        stack.config.turn.min_endpointing_delay = VAD_SILENCE + STT_DELAY + 0.1
        stack.turn_detection = lambda: detector  # type: ignore[method-assign]
        stack.vad = lambda: RawEnergyVAD(silence_s=VAD_SILENCE)  # type: ignore[method-assign]
        suite = Suite(dataset=ds, mode="voice", voice=VoiceOptions(variants=["piper"]))
        res = await arun(suite, runs_dir=tmp_path / "runs", stack=stack, progress=False)
    row = load_run(res.path).iloc[0]
    assert pd.isna(row["error_kind"]), row["error"]
    assert 0.1 in detector.predictions and detector.predictions[-1] == 0.9  # asked at the pause, then at the end
    assert not row["cut_off"] and row["user_turns"] == 1 and row["transcript"] == "question question"
    # at the end it said "done": the turn ended after the minimum delay, not the maximum
    assert 0 < row["eou_delay_s"] < 1.0 and row["v2v_s"] > row["eou_delay_s"]


@pytest.mark.parametrize("gate", [True, False])
async def test_the_end_of_turn_waits_for_the_last_segment_transcript(tmp_path: Path, gate: bool) -> None:
    """A 0.45 s pause: longer than the VAD's silence (0.3 s), so the first phrase is transcribed on its own, shorter
    than its transcript (0.3 s later), so the caller is speaking again when it arrives. At the end of speech part of
    the turn is transcribed: without the transcript gate LiveKit ends the turn at once on that part and the last
    phrase becomes a second user turn; with it, the turn ends once, when the last phrase's transcript arrives."""
    slow_stt = 0.3
    ds = pause_dataset(tmp_path / "ds", {"pause": 0.45})
    stt = FixedDelaySTT(delay_s=slow_stt, text="question")
    with ScriptedEndpoint(Script(ttft_s=LLM_TTFT, text="Sure.")) as ep:
        stack = fake_speech_stack(ep, tmp_path, stt)
        stack.config.turn.wait_for_transcript = gate
        suite = Suite(dataset=ds, mode="voice", voice=VoiceOptions(variants=["piper"]))
        res = await arun(suite, runs_dir=tmp_path / "runs", stack=stack, progress=False)
    row = load_run(res.path).iloc[0]
    assert pd.isna(row["error_kind"]), row["error"]
    assert len(stt.calls) == 2  # one transcription per phrase
    if gate:
        assert not row["cut_off"] and row["user_turns"] == 1 and row["transcript"] == "question question"
        # the turn ended with the last transcript, not before it
        assert row["stt_s"] <= row["eou_delay_s"] and abs(row["eou_delay_s"] - (VAD_SILENCE + slow_stt)) < 0.05
    else:
        assert row["cut_off"] and row["user_turns"] == 2


def test_the_critical_path_cuts_voice_to_voice_into_slices_that_add_up() -> None:
    row = {
        "v2v_s": 1.0,
        "stt_s": 0.3,
        "eou_delay_s": 0.4,
        "llm_start_s": 0.01,
        "llm_ttfc_s": 0.15,
        "llm_ttfs_s": 0.4,
        "tts_ttfb_s": 0.08,
        "playout_s": 0.01,
    }
    path = critical_path(row)
    assert path is not None and list(path) == list(SLICES)
    assert path["stt_s"] == 0.3 and path["eou_after_stt"] == pytest.approx(0.1)
    assert path["llm_ttfc_s"] == 0.15 and path["llm_sentence_rest"] == pytest.approx(0.25)
    assert path["unattributed_s"] == pytest.approx(0.1) and sum(path.values()) == pytest.approx(1.0)
    # a stage not measured is not guessed: its time is unattributed (a row from before the stage columns)
    old = critical_path({k: v for k, v in row.items() if k not in ("llm_start_s", "llm_ttfs_s", "playout_s")})
    assert old is not None and old["llm_ttfc_s"] == 0.15 and old["llm_sentence_rest"] == 0.0
    assert old["unattributed_s"] == pytest.approx(1.0 - 0.4 - 0.15 - 0.08)
    # a transcript after the decision cannot make the end of turn negative; no reply, no path
    late = critical_path(row | {"stt_s": 0.6, "llm_ttfs_s": float("nan")})
    assert late is not None and late["stt_s"] == 0.4 and late["eou_after_stt"] == 0.0
    assert critical_path(row | {"v2v_s": None}) is None


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
