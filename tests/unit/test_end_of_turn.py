"""The end-of-turn pieces on their own: the transcript gate over a batch STT, and the Smart Turn stream (with a
scripted model in place of the ONNX one). Order and causality, not wall-clock figures."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import DEFAULT_API_CONNECT_OPTIONS
from livekit.agents.stt.stream_adapter import StreamAdapter
from livekit.agents.types import NOT_GIVEN
from livekit.agents.utils import merge_frames

from workbench.core.config import VADConfig
from workbench.faults.speech import FixedDelaySTT
from workbench.models.smart_turn import RATE, WINDOW_S, SmartTurnStream
from workbench.models.speech import EarlyTranscripts, PendingSTT, TranscriptGate, load_vad

PAUSES = Path(__file__).resolve().parents[2] / "datasets" / "dianachat_pauses" / "audio"


def _frame(seconds: float, amplitude: float = 0.3) -> rtc.AudioFrame:
    n = int(seconds * RATE)
    pcm = (amplitude * np.sin(np.arange(n) / 5.0) * 32767).astype(np.int16)
    return rtc.AudioFrame(pcm.tobytes(), RATE, 1, n)


async def test_the_gate_answers_at_once_when_no_segment_is_being_transcribed() -> None:
    stt = PendingSTT(FixedDelaySTT(delay_s=0.2, text="hello"))
    gate = TranscriptGate(stt, settle_s=0.01)
    assert await asyncio.wait_for(gate.predict_end_of_turn(None), 1.0) == 1.0
    assert await gate.unlikely_threshold(None) == 0.5 and await gate.supports_language(None)


async def test_the_gate_holds_the_decision_until_the_last_segment_is_transcribed() -> None:
    stt = PendingSTT(FixedDelaySTT(delay_s=0.3, text="rest of it"))
    gate = TranscriptGate(stt, settle_s=0.05)
    recognized: list[str] = []

    async def transcribe() -> None:
        ev = await stt.recognize(_frame(0.5), conn_options=DEFAULT_API_CONNECT_OPTIONS)
        recognized.append(ev.alternatives[0].text)

    task = asyncio.create_task(transcribe())
    await asyncio.sleep(0.01)
    assert stt.pending == 1
    decided = await gate.predict_end_of_turn(None)
    # the decision came only after the transcript did
    assert decided == 1.0 and recognized == ["rest of it"] and stt.pending == 0
    await task


async def test_the_gate_sees_a_segment_whose_transcription_starts_just_after_it_is_asked() -> None:
    """The session's VAD and the STT's own may end the same segment a window apart: the gate settles first."""
    stt = PendingSTT(FixedDelaySTT(delay_s=0.2, text="late"))
    gate = TranscriptGate(stt, settle_s=0.1)
    order: list[str] = []

    async def late_segment() -> None:
        await asyncio.sleep(0.03)
        await stt.recognize(_frame(0.5), conn_options=DEFAULT_API_CONNECT_OPTIONS)
        order.append("transcript")

    task = asyncio.create_task(late_segment())
    await gate.predict_end_of_turn(None)
    order.append("decision")
    await task
    assert order == ["transcript", "decision"]


class _Loudness:
    """A scripted end-of-turn model: the share of loud 10 ms windows in what it is given (0 = silence)."""

    model, provider, threshold, prediction_timeout = "scripted", "test", 0.5, 1.0

    def __init__(self) -> None:
        self.heard: list[int] = []

    def probability(self, audio: np.ndarray) -> float:
        self.heard.append(len(audio))
        return float(np.mean(np.abs(audio) > 0.01)) if len(audio) else 0.0


async def test_smart_turn_stream_predicts_on_what_it_heard_and_forgets_it_on_flush() -> None:
    model = _Loudness()
    stream = SmartTurnStream(model)  # type: ignore[arg-type]
    stream.push_audio(_frame(1.0))
    event = await asyncio.wait_for(stream.predict(), 2.0)
    assert event.type == "eot_prediction" and event.end_of_turn_probability > 0.5
    assert model.heard == [RATE]
    assert await stream.unlikely_threshold(None) == 0.5 and await stream.backchannel_threshold(None) is None
    stream.flush("turn committed")  # a committed turn's audio is not the next turn's
    event = await asyncio.wait_for(stream.predict(), 2.0)
    assert event.end_of_turn_probability == 0.0 and model.heard[-1] == 0
    await stream.aclose()


async def test_smart_turn_stream_keeps_only_the_last_window_and_cancels_a_superseded_prediction() -> None:
    model = _Loudness()
    stream = SmartTurnStream(model)  # type: ignore[arg-type]
    for _ in range(WINDOW_S + 3):
        stream.push_audio(_frame(1.0))
    first = stream.predict()
    second = stream.predict()  # LiveKit asks again after resumed speech: the first answer is no longer wanted
    assert first.cancelled()
    await asyncio.wait_for(second, 2.0)
    assert WINDOW_S * RATE <= model.heard[-1] < (WINDOW_S + 1) * RATE
    stream.cancel_inference()
    with pytest.raises(asyncio.CancelledError):
        await first


class _RecordingSTT(FixedDelaySTT):
    """FixedDelaySTT that keeps the length of every buffer it is asked to transcribe."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(delay_s=delay_s, text="heard")
        self.seconds: list[float] = []

    async def _recognize_impl(self, buffer, *, language=NOT_GIVEN, conn_options):  # type: ignore[no-untyped-def]
        frame = merge_frames(buffer) if isinstance(buffer, list) else buffer
        self.seconds.append(frame.samples_per_channel / frame.sample_rate)
        return await super()._recognize_impl(buffer, language=language, conn_options=conn_options)


async def _early_events(wav: str, min_silence: float, after_s: float | None) -> tuple[list[str], _RecordingSTT, Any]:
    """Push a pause-set call (and 1 s of silence) through the adapter with the real Silero VAD; the events in order."""
    from workbench.replay.audio import load_audio

    audio = load_audio(PAUSES / wav, target_rate=16000)
    pcm = np.concatenate([audio.samples, np.zeros(16000, dtype=np.float32)])
    stt = _RecordingSTT(delay_s=0.05)
    vad = load_vad(VADConfig(min_silence_duration=min_silence))
    late = after_s is None
    adapter = StreamAdapter(stt=stt, vad=vad) if late else EarlyTranscripts(stt=stt, vad=vad, after_s=after_s or 0)
    stream = adapter.stream()
    for i in range(0, len(pcm), 320):  # 20 ms frames, as a room delivers them
        chunk = (pcm[i : i + 320] * 32767).astype(np.int16)
        stream.push_frame(rtc.AudioFrame(chunk.tobytes(), 16000, 1, len(chunk)))
    stream.end_input()
    events = [ev.type.value async for ev in stream]
    return events, stt, adapter


@pytest.mark.parametrize("wav", ["p01_0_piper.wav", "p03_0_piper.wav", "p10_0_piper.wav"])
async def test_early_transcripts_give_the_same_events_with_the_stt_started_before_the_segment_ended(wav: str) -> None:
    """Each segment (these calls' mid-question pause splits them in two at 0.25 s) gets one transcription, of its
    audio without most of the silence that ended it: the STT started before the VAD ended the segment. Same
    events as LiveKit's StreamAdapter."""
    late, late_stt, _ = await _early_events(wav, min_silence=0.25, after_s=None)
    early, early_stt, adapter = await _early_events(wav, min_silence=0.25, after_s=0.05)
    assert early == late and early.count("final_transcript") == early.count("end_of_speech") == 2
    assert len(early_stt.seconds) == len(late_stt.seconds) == adapter.early_used == 2
    for e, full in zip(early_stt.seconds, late_stt.seconds, strict=True):
        # started once 0.05 s of silence was seen (a 32 ms window late), not after the whole 0.25 s
        assert 0.1 < full - e <= 0.25 - 0.05


async def test_an_early_transcript_is_dropped_when_the_caller_goes_on() -> None:
    """p01 pauses 0.3 s mid-question: with a 0.6 s VAD silence the early transcript of the first phrase is
    dropped and the whole question transcribed once it ends; one segment, its final transcript the whole one."""
    events, stt, adapter = await _early_events("p01_0_piper.wav", min_silence=0.6, after_s=0.05)
    assert events.count("end_of_speech") == 1 and adapter.early_dropped >= 1
    assert len(stt.seconds) == adapter.early_dropped + 1 and adapter.early_used == 0
    assert stt.seconds[-1] == max(stt.seconds)  # the final transcription is of the whole question


async def test_the_session_transcribes_early_only_when_the_config_says_so(tmp_path: Path) -> None:
    """``turn.early_transcript_s`` puts :class:`EarlyTranscripts` (over the gate's counting STT) in the session the
    harness and the worker build; by default the session gets the batch STT and wraps it in LiveKit's adapter."""
    from workbench.faults.endpoint import ScriptedEndpoint
    from workbench.pipeline import build_session
    from workbench.strategies.registry import build
    from workbench.testing.worlds import fake_speech_stack

    with ScriptedEndpoint() as ep:
        stack = fake_speech_stack(ep, tmp_path, FixedDelaySTT())
        default = build_session(stack, build("plain", stack), mode="voice")
        assert isinstance(default.stt, PendingSTT)
        stack.config.turn = stack.config.turn.model_copy(update={"early_transcript_s": 0.08})
        early = build_session(stack, build("plain", stack), mode="voice")
        assert isinstance(early.stt, EarlyTranscripts) and early.stt.after_s == 0.08
        assert isinstance(early.stt.wrapped_stt, PendingSTT) and early.stt.capabilities.streaming
