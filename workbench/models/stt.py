"""Whisper (faster-whisper, CTranslate2) as a batch ``livekit.agents.stt.STT``.

Batch like any non-streaming provider: ``AgentSession`` wraps it with a VAD
``StreamAdapter``. Inference runs on one dedicated thread so the event loop never stalls
and concurrent sessions queue instead of thrashing two cores.
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from livekit.agents import APIConnectOptions, stt
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer

from workbench.core.config import STTConfig
from workbench.models.assets import whisper_dir
from workbench.models.audio import frames_to_mono_f32
from workbench.models.session import SessionHandles


class WhisperSTT(SessionHandles, stt.STT):
    def __init__(self, config: STTConfig | None = None) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        from faster_whisper import WhisperModel

        self.config = config or STTConfig()
        self.model_dir = whisper_dir(self.config.model)
        self._model = WhisperModel(
            str(self.model_dir),
            device="cpu",
            compute_type=self.config.compute_type,
            cpu_threads=self.config.threads,
            local_files_only=True,
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")

    @property
    def model(self) -> str:
        return f"whisper-{self.config.model}"

    @property
    def provider(self) -> str:
        return "faster-whisper"

    def transcribe(self, pcm16k: np.ndarray) -> tuple[str, float]:
        """Blocking transcription of mono float32 16 kHz audio: (text, mean confidence)."""
        if pcm16k.size < 1600:  # under 0.1 s: nothing Whisper can use
            return "", 0.0
        segments, _ = self._model.transcribe(
            pcm16k,
            language=self.config.language,
            beam_size=self.config.beam_size,
            condition_on_previous_text=False,
            vad_filter=False,
            without_timestamps=True,
        )
        segs = list(segments)
        text = " ".join(s.text.strip() for s in segs).strip()
        conf = float(np.mean([np.exp(s.avg_logprob) for s in segs])) if segs else 0.0
        return text, conf

    async def _recognize_impl(
        self, buffer: AudioBuffer, *, language: NotGivenOr[str] = NOT_GIVEN, conn_options: APIConnectOptions
    ) -> stt.SpeechEvent:
        pcm = frames_to_mono_f32(buffer, 16000)
        text, conf = await asyncio.get_running_loop().run_in_executor(self._executor, self.transcribe, pcm)
        lang = LanguageCode(language if language is not NOT_GIVEN and language else self.config.language)
        duration = len(pcm) / 16000
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=uuid.uuid4().hex,
            alternatives=[stt.SpeechData(language=lang, text=text, end_time=duration, confidence=conf)],
            recognition_usage=stt.RecognitionUsage(audio_duration=duration),
        )

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
