"""Voice activity and end of turn: Silero VAD, the turn-detection choice for a session, and the transcript gate."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from livekit.agents import APIConnectOptions, stt, vad
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
    max endpointing delay on synthetic audio (field notes).
    """
    c = config or TurnConfig()
    if c.mode == "vad":
        return "vad"
    from livekit.agents.inference import TurnDetector

    return TurnDetector()


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
