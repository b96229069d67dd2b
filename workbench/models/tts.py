"""Piper and espeak-ng as non-streaming ``livekit.agents.tts.TTS`` providers.

Non-streaming on purpose: ``AgentSession`` wraps them in a sentence ``StreamAdapter``, so
the first sentence is spoken while the LLM is still writing the second. Synthesis runs on
one thread per voice; audio is pushed chunk by chunk as Piper produces it.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import uuid
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, tts

from workbench.core.config import TTSConfig
from workbench.models.assets import espeak_binary, piper_voice
from workbench.models.session import SessionHandles

_DONE = object()


class _ThreadedSynth(SessionHandles, tts.TTS):
    """Shared shape: a blocking ``pcm_chunks(text)`` generator run off the event loop."""

    def __init__(self, sample_rate: int, config: TTSConfig) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False), sample_rate=sample_rate, num_channels=1)
        self.config = config
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=type(self).__name__)

    def pcm_chunks(self, text: str) -> Iterator[bytes]:  # pragma: no cover - abstract
        raise NotImplementedError

    def synthesize_bytes(self, text: str) -> bytes:
        """Blocking whole-utterance synthesis (for dataset recording and tests)."""
        return b"".join(self.pcm_chunks(text))

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _ThreadedChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class _ThreadedChunkedStream(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        synth: _ThreadedSynth = self._tts  # type: ignore[assignment]
        output_emitter.initialize(
            request_id=uuid.uuid4().hex, sample_rate=synth.sample_rate, num_channels=1, mime_type="audio/pcm"
        )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()  # a reply is a few sentence chunks: small
        cancelled = False

        def post(item: object) -> bool:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
                return True
            except RuntimeError:  # the loop is gone: nobody is listening any more
                return False

        def produce() -> None:
            try:
                for chunk in synth.pcm_chunks(self._input_text):
                    if cancelled or not post(chunk):
                        return
            except Exception as e:  # surfaced on the loop side
                post(e)
            finally:
                post(_DONE)

        loop.run_in_executor(synth._executor, produce)
        try:
            while (item := await queue.get()) is not _DONE:
                if isinstance(item, Exception):
                    raise item
                output_emitter.push(item)  # type: ignore[arg-type]
            output_emitter.flush()
        finally:
            cancelled = True  # an interrupted reply stops synthesis at the next chunk


class PiperTTS(_ThreadedSynth):
    """Piper with the en_US joe voice; ``deterministic`` turns the noise off for identical audio."""

    def __init__(self, config: TTSConfig | None = None) -> None:
        from piper import PiperVoice, SynthesisConfig

        config = config or TTSConfig()
        self.voice_path = piper_voice()
        self._voice = PiperVoice.load(self.voice_path)
        self._syn = SynthesisConfig(
            length_scale=1.0 / config.speed,
            noise_scale=0.0 if config.deterministic else None,
            noise_w_scale=0.0 if config.deterministic else None,
        )
        super().__init__(self._voice.config.sample_rate, config)

    @property
    def model(self) -> str:
        return "piper-en_US-joe-medium"

    @property
    def provider(self) -> str:
        return "piper"

    def pcm_chunks(self, text: str) -> Iterator[bytes]:
        for chunk in self._voice.synthesize(text, syn_config=self._syn):
            yield chunk.audio_int16_bytes


class EspeakTTS(_ThreadedSynth):
    """espeak-ng: a robotic but very different second voice, 10 ms per sentence."""

    def __init__(self, config: TTSConfig | None = None) -> None:
        self.binary = espeak_binary()
        super().__init__(22050, config or TTSConfig(kind="espeak"))

    @property
    def model(self) -> str:
        return f"espeak-ng-{self.config.espeak_voice}"

    @property
    def provider(self) -> str:
        return "espeak-ng"

    def pcm_chunks(self, text: str) -> Iterator[bytes]:
        wpm = str(int(175 * self.config.speed))
        out = subprocess.run(
            [str(self.binary), "-v", self.config.espeak_voice, "-s", wpm, "--stdout", text],
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
        with wave.open(io.BytesIO(out)) as w:
            if w.getframerate() != self.sample_rate:
                raise RuntimeError(f"espeak-ng produced {w.getframerate()} Hz, expected {self.sample_rate}")
            yield w.readframes(w.getnframes())


def build_tts(config: TTSConfig | None = None) -> tts.TTS:
    config = config or TTSConfig()
    return PiperTTS(config) if config.kind == "piper" else EspeakTTS(config)
