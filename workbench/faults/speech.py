"""Scripted speech components with known delays, for testing the voice harness's measurements.

For tests and benchmarks: each behaves like its LiveKit base class (``vad.VAD``, ``stt.STT``, ``tts.TTS``)
but with exact, configurable timing, so a measured latency can be checked against the sum of
the delays that produced it.

Each can be named in a config's factory section with keyword arguments, e.g. a suite's
``components: {stt: {use: "workbench.faults.speech:FixedDelaySTT", delay_s: 0.1, text: question}}``,
so a process that builds its stack from the config alone (a Ray slot) gets the same light components;
the arguments then arrive as JSON types (lists, string keys), which the constructors accept.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectionError, APIConnectOptions, stt, tts, vad
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer


class EnergyVAD(vad.VAD):
    """Speech is any 10 ms window above ``threshold`` RMS; END after exactly ``silence_s`` of quiet."""

    def __init__(self, threshold: float = 0.01, silence_s: float = 0.3, min_speech_s: float = 0.05) -> None:
        super().__init__(capabilities=vad.VADCapabilities(update_interval=0.02))
        self.threshold, self.silence_s, self.min_speech_s = threshold, silence_s, min_speech_s

    def stream(self) -> vad.VADStream:
        return _EnergyVADStream(self)


class _EnergyVADStream(vad.VADStream):
    async def _main_task(self) -> None:
        v: EnergyVAD = self._vad  # type: ignore[assignment]
        speaking, speech_s, silence_s, samples = False, 0.0, 0.0, 0
        speech_frames: list[rtc.AudioFrame] = []
        async for frame in self._input_ch:
            if not isinstance(frame, rtc.AudioFrame):  # flush: a hard segment boundary
                speaking, speech_s, silence_s, speech_frames = False, 0.0, 0.0, []
                continue
            pcm = np.frombuffer(frame.data, dtype=np.int16).astype(np.float32) / 32768.0
            samples += frame.samples_per_channel
            loud = float(np.sqrt(np.mean(pcm**2))) > v.threshold if pcm.size else False
            dur = frame.duration
            ts = samples / frame.sample_rate

            def send(kind: vad.VADEventType, **extra: Any) -> None:
                self._event_ch.send_nowait(
                    vad.VADEvent(
                        type=kind,
                        samples_index=samples,  # noqa: B023  (sent at once, within this iteration)
                        timestamp=ts,  # noqa: B023
                        speech_duration=speech_s,  # noqa: B023
                        silence_duration=silence_s,  # noqa: B023
                        speaking=speaking,  # noqa: B023
                        **extra,
                    )
                )

            if loud:
                speech_s, silence_s = speech_s + dur, 0.0
            else:
                silence_s += dur
            if speaking or loud:
                speech_frames.append(frame)
            if not speaking and loud and speech_s >= v.min_speech_s:
                speaking = True
                send(vad.VADEventType.START_OF_SPEECH, frames=list(speech_frames))
            elif speaking and silence_s >= v.silence_s - 1e-9:
                speaking = False
                send(vad.VADEventType.END_OF_SPEECH, frames=list(speech_frames))
                speech_frames, speech_s = [], 0.0
            elif not speaking and not loud:
                speech_s, speech_frames = 0.0, []
            send(vad.VADEventType.INFERENCE_DONE, probability=1.0 if loud else 0.0)


class FixedDelaySTT(stt.STT):
    """Batch STT that answers ``text`` (or pops from ``texts``) exactly ``delay_s`` after it is asked."""

    def __init__(self, delay_s: float = 0.1, texts: list[str] | None = None, text: str = "hello") -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self.delay_s, self.texts, self.text = delay_s, list(texts or []), text
        self.calls: list[float] = []

    async def _recognize_impl(
        self, buffer: AudioBuffer, *, language: NotGivenOr[str] = NOT_GIVEN, conn_options: APIConnectOptions
    ) -> stt.SpeechEvent:
        self.calls.append(time.time())
        await asyncio.sleep(self.delay_s)
        text = self.texts.pop(0) if self.texts else self.text
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=uuid.uuid4().hex,
            alternatives=[stt.SpeechData(language=LanguageCode("en"), text=text, confidence=1.0)],
        )


class FixedDelayTTS(tts.TTS):
    """TTS whose first audio comes exactly ``ttfb_s`` after a request: a 440 Hz tone, ``seconds_per_word`` long."""

    def __init__(self, ttfb_s: float = 0.08, seconds_per_word: float = 0.05, sample_rate: int = 16000) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False), sample_rate=sample_rate, num_channels=1)
        self.ttfb_s, self.seconds_per_word = ttfb_s, seconds_per_word

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _ToneStream(tts=self, input_text=text, conn_options=conn_options)


class _ToneStream(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        t: FixedDelayTTS = self._tts  # type: ignore[assignment]
        output_emitter.initialize(
            request_id=uuid.uuid4().hex, sample_rate=t.sample_rate, num_channels=1, mime_type="audio/pcm"
        )
        await asyncio.sleep(t.ttfb_s)
        n = max(1, int(len(self._input_text.split()) * t.seconds_per_word * t.sample_rate))
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / t.sample_rate) * 32767).astype(np.int16)
        output_emitter.push(tone.tobytes())
        output_emitter.flush()


class ToneSTT(FixedDelaySTT):
    """Batch STT that "hears" the dominant tone of the speech: ``tones`` maps a frequency (Hz) to its transcript.

    Unlike a list of answers in call order, this stays right when many sessions share one process and run
    concurrently: each recording says which words it carries (see :func:`tone`). Without ``tones`` it
    answers like :class:`FixedDelaySTT`.
    """

    def __init__(self, delay_s: float = 0.1, tones: Mapping[float | str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(delay_s, **kwargs)
        # keys as numbers: a config section travels as JSON (to a Ray slot, into a manifest), whose keys are strings
        self.tones = {float(freq): text for freq, text in (tones or {}).items()}

    def heard(self, buffer: AudioBuffer) -> str:
        if not self.tones:
            return self.texts.pop(0) if self.texts else self.text
        frame = buffer if isinstance(buffer, rtc.AudioFrame) else rtc.combine_audio_frames(buffer)
        pcm = np.frombuffer(frame.data, dtype=np.int16).astype(np.float32)
        if pcm.size == 0:
            return ""
        spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
        peak = float(np.fft.rfftfreq(pcm.size, 1 / frame.sample_rate)[int(np.argmax(spectrum))])
        nearest = min(self.tones, key=lambda f: abs(f - peak))
        return self.tones[nearest] if abs(nearest - peak) < 10 else ""

    async def _recognize_impl(
        self, buffer: AudioBuffer, *, language: NotGivenOr[str] = NOT_GIVEN, conn_options: APIConnectOptions
    ) -> stt.SpeechEvent:
        self.calls.append(time.time())
        await asyncio.sleep(self.delay_s)
        return _final(self.heard(buffer))


def _final(text: str) -> stt.SpeechEvent:
    return stt.SpeechEvent(
        type=stt.SpeechEventType.FINAL_TRANSCRIPT,
        request_id=uuid.uuid4().hex,
        alternatives=[stt.SpeechData(language=LanguageCode("en"), text=text, confidence=1.0)],
    )


def tone(freq: float, seconds: float, rate: int = 16000, amplitude: float = 0.3) -> np.ndarray:
    """A pure tone: "speech" with an exactly known end that :class:`ToneSTT` recognises by its frequency."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


class FailingSTT(ToneSTT):
    """:class:`ToneSTT` that raises an API error on recognitions number ``fail_on`` (0-based, in call order)
    or whenever ``fail_if(transcript)`` is true (it would have heard that transcript).

    ``retryable=False`` by default so LiveKit's STT retry loop (2 s between attempts) does not slow tests;
    the harness must record the failed turn and go on either way.
    """

    def __init__(
        self,
        delay_s: float = 0.1,
        *,
        fail_on: Iterable[int] | None = None,
        fail_if: Callable[[str], bool] | None = None,
        retryable: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(delay_s, **kwargs)
        self.fail_on, self.fail_if, self.retryable = set(fail_on or ()), fail_if, retryable
        self.failures = 0

    async def _recognize_impl(
        self, buffer: AudioBuffer, *, language: NotGivenOr[str] = NOT_GIVEN, conn_options: APIConnectOptions
    ) -> stt.SpeechEvent:
        n = len(self.calls)
        self.calls.append(time.time())
        text = self.heard(buffer)
        await asyncio.sleep(self.delay_s)
        if n in self.fail_on or (self.fail_if is not None and self.fail_if(text)):
            self.failures += 1
            raise APIConnectionError("scripted STT failure", retryable=self.retryable)
        return _final(text)


class FailingTTS(FixedDelayTTS):
    """:class:`FixedDelayTTS` whose requests number ``fail_on`` (0-based), or whose text matches ``fail_if``,
    raise an API error after ``ttfb_s``, before any audio."""

    def __init__(
        self,
        ttfb_s: float = 0.08,
        seconds_per_word: float = 0.05,
        sample_rate: int = 16000,
        *,
        fail_on: Iterable[int] | None = None,
        fail_if: Callable[[str], bool] | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(ttfb_s, seconds_per_word, sample_rate)
        self.fail_on, self.fail_if, self.retryable = set(fail_on or ()), fail_if, retryable
        self.requests = 0
        self.failures = 0

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        n, self.requests = self.requests, self.requests + 1
        if n in self.fail_on or (self.fail_if is not None and self.fail_if(text)):
            self.failures += 1
            return _FailingToneStream(tts=self, input_text=text, conn_options=conn_options)
        return super().synthesize(text, conn_options=conn_options)


class _FailingToneStream(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        t: FailingTTS = self._tts  # type: ignore[assignment]
        await asyncio.sleep(t.ttfb_s)
        raise APIConnectionError("scripted TTS failure", retryable=t.retryable)


SPEECH_API_RATE = 24000  # what OpenAI's speech API (and livekit-plugins-openai's TTS) expects


class FixedDelayEngines:
    """Engines of known delay behind the real HTTP API, for latency-validity checks of plugin paths: a
    transcript (``texts`` in turn, then ``text``) ``stt_delay_s`` after the audio arrives, and the first audio
    ``tts_ttfb_s`` after the text (a 440 Hz tone, ``seconds_per_word`` a word). Audio under 0.1 s is heard as
    nothing, as Whisper does, so a warm-up request takes no transcript."""

    stt_model = tts_model = "fixed-delay"
    language = "en"
    tts_sample_rate = SPEECH_API_RATE

    def __init__(
        self,
        stt_delay_s: float = 0.1,
        tts_ttfb_s: float = 0.08,
        texts: list[str] | None = None,
        text: str = "hello",
        seconds_per_word: float = 0.05,
    ) -> None:
        self.stt_delay_s, self.tts_ttfb_s, self.seconds_per_word = stt_delay_s, tts_ttfb_s, seconds_per_word
        self.texts, self.text = list(texts or []), text

    def transcribe(self, pcm16k: np.ndarray) -> str:
        if pcm16k.size < 1600:
            return ""
        time.sleep(self.stt_delay_s)
        return self.texts.pop(0) if self.texts else self.text

    def pcm_chunks(self, text: str, speed: float) -> Iterator[bytes]:
        time.sleep(self.tts_ttfb_s)
        n = int(self.seconds_per_word * max(1, len(text.split())) / speed * SPEECH_API_RATE)
        yield (np.sin(2 * np.pi * 440 * np.arange(n) / SPEECH_API_RATE) * 8000).astype(np.int16).tobytes()
