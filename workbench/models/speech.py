"""Voice activity and end of turn: Silero VAD, the turn-detection choice for a session, the transcript gate, and
early transcripts for a batch STT."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from livekit import rtc
from livekit.agents import APIConnectOptions, stt, utils, vad
from livekit.agents.stt.stream_adapter import StreamAdapter, StreamAdapterWrapper
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer

from workbench.core.config import TurnConfig, VADConfig


def load_vad(config: VADConfig | None = None) -> vad.VAD:
    """Silero VAD from the onnx file inside ``livekit-plugins-silero`` (no download)."""
    from livekit.plugins import silero

    c = config or VADConfig()
    return silero.VAD.load(
        min_speech_duration=c.min_speech_duration,
        min_silence_duration=c.min_silence_duration,
        activation_threshold=c.activation_threshold,
    )


def turn_detection(config: TurnConfig | None = None) -> Any:
    """What ``AgentSession(turn_detection=...)`` gets: ``"vad"`` or LiveKit's local TurnDetector.

    VAD is the default because it is reproducible; the TurnDetector often waits the full
    max endpointing delay on synthetic audio (field notes). Its version is pinned to the local
    ``v1-mini``: unpinned, LiveKit picks the cloud model in a worker started with ``dev`` or
    ``console``, which is not what a replay measured.
    """
    c = config or TurnConfig()
    if c.mode == "vad":
        return "vad"
    from livekit.agents.inference import TurnDetector

    return TurnDetector(version="v1-mini")


class PendingSTT(stt.STT):
    """One session's view of a batch STT that counts the speech segments it is still transcribing.

    LiveKit transcribes a batch STT's audio one VAD segment at a time, after the segment ends; ``pending`` says
    whether a segment of the caller's speech has no transcript yet (:class:`TranscriptGate` reads it). Recognition
    itself is the wrapped STT's, without a second retry loop.
    """

    def __init__(self, inner: stt.STT) -> None:
        super().__init__(capabilities=inner.capabilities)
        self._inner = inner
        self._label = inner.label  # metrics and logs name the STT doing the work
        self.pending = 0
        self.last_final_at = 0.0

    @property
    def model(self) -> str:
        return self._inner.model

    @property
    def provider(self) -> str:
        return self._inner.provider

    async def _recognize_impl(
        self, buffer: AudioBuffer, *, language: NotGivenOr[str] = NOT_GIVEN, conn_options: APIConnectOptions
    ) -> stt.SpeechEvent:
        self.pending += 1
        try:
            return await self._inner._recognize_impl(buffer, language=language, conn_options=conn_options)
        finally:
            self.pending -= 1
            self.last_final_at = time.time()


class TranscriptGate:
    """End-of-turn "model" for VAD turn detection over a batch STT: the turn is not over while a segment of the
    caller's speech is still being transcribed.

    Without it, a caller who paused mid-turn long enough for the VAD to end a segment has that segment transcribed;
    at the end of their speech LiveKit then ends the turn ``min_endpointing_delay`` after the last speech on that
    transcript alone, and the last segment's transcript, arriving later, becomes a second user turn (the agent
    answers half the question, then again). LiveKit asks the gate before it ends a turn that has a transcript; the
    gate holds the decision until the STT has no segment left (at most ``max_wait_s``), by which time the last
    transcript has reached the session, which then ends the turn on all of it. Resumed speech cancels the wait as
    it cancels any end-of-turn decision. With nothing pending it answers at once, so a turn without such a pause
    is not delayed.
    """

    def __init__(self, stt: PendingSTT, settle_s: float = 0.1, max_wait_s: float = 3.0) -> None:
        self.stt, self.settle_s, self.max_wait_s = stt, settle_s, max_wait_s

    @property
    def model(self) -> str:
        return "transcript-gate"

    @property
    def provider(self) -> str:
        return "workbench"

    async def unlikely_threshold(self, language: Any) -> float | None:
        return 0.5

    async def supports_language(self, language: Any) -> bool:
        return True

    async def predict_end_of_turn(self, chat_ctx: Any, *, timeout: float | None = None) -> float:
        if not self.stt.pending:
            if time.time() - self.stt.last_final_at < 0.05:
                return 1.0  # asked because a transcript just arrived: nothing is left to wait for
            # asked at the VAD's end of speech: the STT's own VAD may end the same segment a window later
            await asyncio.sleep(self.settle_s)
            if not self.stt.pending:
                return 1.0
        deadline = time.monotonic() + self.max_wait_s
        while self.stt.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        # the transcript goes on to the session, which starts a decision of its own on it (ending this one); an
        # empty transcript does not, and this decision goes on with what was transcribed before
        await asyncio.sleep(0.05)
        return 1.0


class EarlyTranscripts(StreamAdapter):
    """LiveKit's VAD ``StreamAdapter`` for a batch STT, except that a segment is transcribed as soon as the caller
    has been silent for ``after_s``, not when the VAD ends the segment ``min_silence_duration`` later.

    Over a batch STT the transcript, and so the end of turn, comes after the VAD's silence *plus* the STT's time
    (Whisper tiny.en: ~0.4 s on two cores); starting the STT early overlaps the two. When the caller goes on
    speaking the early transcript is dropped, and the segment is transcribed whole when it does end; one early
    transcription runs at a time, so a caller's short pauses cannot queue up work ahead of the real one. The audio
    transcribed early is the segment as the VAD buffered it (prefix padding and speech), minus the trailing
    silence the VAD would have added.
    """

    def __init__(self, *, stt: stt.STT, vad: vad.VAD, after_s: float = 0.05) -> None:
        super().__init__(stt=stt, vad=vad)
        self.after_s = after_s
        self.early_used = 0  # segments whose early transcript became the final one
        self.early_dropped = 0  # early transcripts dropped because the caller went on

    def stream(
        self, *, language: NotGivenOr[str] = NOT_GIVEN, conn_options: APIConnectOptions = APIConnectOptions()
    ) -> stt.RecognizeStream:
        return _EarlyStream(self, vad=self._vad, wrapped_stt=self._stt, language=language, conn_options=conn_options)


class _EarlyStream(StreamAdapterWrapper):
    _stt: EarlyTranscripts

    async def _run(self) -> None:
        vad_stream = self._vad.stream()
        adapter = self._stt
        speech: list[rtc.AudioFrame] = []  # the VAD's buffer of the current segment, rebuilt from its events
        early: asyncio.Task[stt.SpeechEvent] | None = None
        early_silence = -1.0  # the silence run the early transcript was started in (-1: none in this run)

        def recognize(frames: list[rtc.AudioFrame]) -> asyncio.Task[stt.SpeechEvent]:
            return asyncio.create_task(
                self._wrapped_stt.recognize(
                    buffer=utils.merge_frames(frames),
                    language=self._language,
                    conn_options=self._wrapped_stt_conn_options,
                )
            )

        async def forward_input() -> None:
            async for frame in self._input_ch:
                if isinstance(frame, self._FlushSentinel):
                    vad_stream.flush()
                else:
                    vad_stream.push_frame(frame)
            vad_stream.end_input()

        def send_final(ev: stt.SpeechEvent, speech_end_time: float) -> None:
            if ev.alternatives and ev.alternatives[0].text:
                end = ev.speech_end_time if ev.speech_end_time is not None else speech_end_time
                final = stt.SpeechEvent(
                    stt.SpeechEventType.FINAL_TRANSCRIPT, alternatives=[ev.alternatives[0]], speech_end_time=end
                )
                self._event_ch.send_nowait(final)

        async def transcribe() -> None:
            nonlocal early, early_silence
            speaking = False
            async for ev in vad_stream:
                if ev.type == vad.VADEventType.START_OF_SPEECH:
                    speaking, speech[:] = True, list(ev.frames)
                    early, early_silence = None, -1.0
                    self._event_ch.send_nowait(stt.SpeechEvent(stt.SpeechEventType.START_OF_SPEECH))
                elif ev.type == vad.VADEventType.INFERENCE_DONE and speaking:
                    # raw_accumulated_silence: the silence before this window; it only grows until speech resets it
                    if ev.raw_accumulated_silence < early_silence:
                        early_silence = -1.0  # the caller went on: the early transcript is of a part of the turn
                        adapter.early_dropped += 1
                    speech.extend(ev.frames)
                    idle = early is None or early.done()
                    if early_silence < 0 and ev.raw_accumulated_silence >= adapter.after_s and idle:
                        early, early_silence = recognize(list(speech)), ev.raw_accumulated_silence
                elif ev.type == vad.VADEventType.END_OF_SPEECH:
                    speaking = False
                    speech_end_time = time.time() - ev.silence_duration - ev.inference_duration
                    self._event_ch.send_nowait(
                        stt.SpeechEvent(stt.SpeechEventType.END_OF_SPEECH, speech_end_time=speech_end_time)
                    )
                    if early is not None and early_silence >= 0:
                        adapter.early_used += 1
                        result = await early
                    else:
                        result = await recognize(list(ev.frames))
                    early, early_silence = None, -1.0
                    send_final(result, speech_end_time)

        tasks = [asyncio.create_task(forward_input()), asyncio.create_task(transcribe())]
        try:
            await asyncio.gather(*tasks)
        finally:
            await utils.aio.cancel_and_wait(*tasks)
            if early is not None:
                await utils.aio.cancel_and_wait(early)
            await vad_stream.aclose()
