"""The end-of-turn pieces on their own: the transcript gate over a batch STT, and the Smart Turn stream (with a
scripted model in place of the ONNX one). Order and causality, not wall-clock figures."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import DEFAULT_API_CONNECT_OPTIONS

from workbench.faults.speech import FixedDelaySTT
from workbench.models.smart_turn import RATE, WINDOW_S, SmartTurnStream
from workbench.models.speech import PendingSTT, TranscriptGate


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
