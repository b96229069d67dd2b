"""The managed local speech server: the embedded Whisper and Piper behind OpenAI's audio API.

Serves ``POST /v1/audio/transcriptions`` (multipart ``file``; ``response_format`` json, text or
verbose_json), ``POST /v1/audio/speech`` (JSON ``input``; ``response_format`` pcm, wav, mp3, flac,
opus or aac, all 24 kHz mono like OpenAI's, ``pcm`` streamed as 16-bit little-endian while Piper
speaks), ``GET /v1/models`` and ``GET /health``, so livekit-plugins-openai's own ``STT`` and ``TTS``
classes run offline against the models the embedded stack uses. :class:`SpeechServer` starts it
like :class:`~workbench.models.llm_server.LocalLLMServer`: a child process on 127.0.0.1 and a free
port, health-checked, stopped at exit, and gone when its parent dies. ``workbench serve speech``
runs it in the foreground.

A model stack points the plugins at it (``url`` below is ``SpeechServer.base_url``)::

    stt: {use: "livekit.plugins.openai:STT", base_url: <url>, api_key: unused, model: whisper-1}
    tts: {use: "livekit.plugins.openai:TTS", base_url: <url>, api_key: unused, model: tts-1,
          response_format: pcm}

or in code, :func:`openai_plugin_components`. Ask the TTS for ``pcm`` (the plugin defaults to
mp3, which works but is encoded whole before the first byte is sent). ``SpeechServer(engines=...)``
serves other engines instead, e.g. :class:`workbench.faults.speech.FixedDelayEngines` for latency-validity checks of the
plugin path. The first request in a client process pays ~0.15-0.35 s of lazy imports in the openai
client (once per process): warm it up before measuring.

Written here because no maintained package fits (checked 2026-12 on PyPI):
- speaches (formerly faster-whisper-server, speaches-ai): not published on PyPI as a server (only a
  ``speaches-cli`` client); it resolves models through the Hugging Face hub cache and registry,
  air-gapped use is an open question upstream.
- ``faster-whisper-server`` 0.0.3: light and takes a local model path, but transcription only.
- openedai-speech: not on PyPI (Docker or git); TTS only; its tts-1-hd needs a GPU.
- ``agent-cli`` 0.112.0 (``server asr`` / ``server tts``): two servers, 18 more packages (sentry-sdk,
  fastapi-cloud-cli, ...), and its ``pcm`` is Piper's 22.05 kHz, which the plugin plays as 24 kHz.
- ``wyoming-piper`` / ``wyoming-faster-whisper``: the Wyoming protocol, not OpenAI's API.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import sys
import threading
import time
import uuid
import wave
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from aiohttp import web

from workbench.core.config import STTConfig, TTSConfig
from workbench.models.served import ManagedServer

log = logging.getLogger(__name__)

OUT_RATE = 24000  # what OpenAI's speech API returns and livekit-plugins-openai's TTS decodes
MAX_UPLOAD = 25 * 1024 * 1024  # OpenAI's transcription upload limit
MAX_INPUT = 4096  # OpenAI's speech input limit, in characters
STT_ALIASES = ("whisper-1",)
TTS_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
# response_format -> (content type, PyAV container, codec); pcm and wav are written without PyAV
REQUEST_ID = web.RequestKey("request_id", str)
AUDIO_FORMATS: dict[str, tuple[str, str | None, str | None]] = {
    "pcm": ("audio/pcm", None, None),
    "wav": ("audio/wav", None, None),
    "mp3": ("audio/mpeg", "mp3", "libmp3lame"),
    "flac": ("audio/flac", "flac", "flac"),
    "opus": ("audio/ogg", "ogg", "libopus"),
    "aac": ("audio/aac", "adts", "aac"),
}


class SpeechEngines(Protocol):
    """What the HTTP app needs from the models (the real ones or a test's fakes)."""

    stt_model: str
    tts_model: str
    language: str
    tts_sample_rate: int

    def transcribe(self, pcm16k: np.ndarray) -> str: ...

    def pcm_chunks(self, text: str, speed: float) -> Iterator[bytes]: ...


class EmbeddedEngines:
    """The embedded stack's own Whisper and TTS (``WhisperSTT``, ``build_tts``): the same settings, the same text."""

    def __init__(self, stt: STTConfig | None = None, tts: TTSConfig | None = None) -> None:
        from workbench.models.stt import WhisperSTT

        self._stt = WhisperSTT(stt or STTConfig())
        self._tts_config = tts or TTSConfig()
        self._voices: dict[float, Any] = {}
        self.stt_model = self._stt.model
        self.language = self._stt.config.language
        voice = self._voice(self._tts_config.speed)
        self.tts_model, self.tts_sample_rate = voice.model, voice.sample_rate

    def _voice(self, speed: float) -> Any:
        """One voice per speed asked for (Piper fixes speed when it loads); a handful at most."""
        speed = round(speed, 2)
        if speed not in self._voices:
            from workbench.models.tts import build_tts

            if len(self._voices) >= 4:  # drop the oldest but the first (the configured speed)
                self._voices.pop(list(self._voices)[1])
            self._voices[speed] = build_tts(self._tts_config.model_copy(update={"speed": speed}))
        return self._voices[speed]

    def transcribe(self, pcm16k: np.ndarray) -> str:
        return self._stt.transcribe(pcm16k)[0]

    def pcm_chunks(self, text: str, speed: float) -> Iterator[bytes]:
        return self._voice(speed * self._tts_config.speed).pcm_chunks(text)


class BadRequest(Exception):
    """A client error: answered as 400 with OpenAI's error body."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _error(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error") -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return web.json_response(body, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as e:
        return _error(400, str(e), e.param)
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"request body over {MAX_UPLOAD // (1024 * 1024)} MB")
    except web.HTTPException as e:
        return _error(e.status, e.reason)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as e:  # a model failure: the server keeps serving
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, f"{type(e).__name__}: {e}", kind="server_error")


@web.middleware
async def _request_id(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    """Every answer names its request, as OpenAI's do (the plugins log a warning without one)."""
    request[REQUEST_ID] = f"req_{uuid.uuid4().hex}"
    response = await handler(request)
    if not response.prepared:
        response.headers["x-request-id"] = request[REQUEST_ID]
    return response


def decode_upload(data: bytes) -> np.ndarray:
    """An uploaded audio file to mono float32 16 kHz; :class:`BadRequest` if it is empty or not audio.

    16-bit WAV (what the plugins send) is read directly; anything else PyAV reads (MP3, FLAC, OGG, ...)
    goes through PyAV. Not ``faster_whisper.decode_audio``: it runs ``gc.collect()`` on every call, which
    costs 0.2-0.5 s in a process holding livekit-agents.
    """
    if not data:
        raise BadRequest("the uploaded file is empty", "file")
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        try:
            with wave.open(io.BytesIO(data)) as w:
                if w.getsampwidth() == 2:
                    rate, channels, raw = w.getframerate(), w.getnchannels(), w.readframes(w.getnframes())
                    pcm = np.frombuffer(raw[: len(raw) // (2 * channels) * 2 * channels], np.int16)
                    return _to_16k(pcm.reshape(-1, channels).mean(axis=1) / 32768.0, rate)
        except (wave.Error, EOFError, ValueError):
            pass  # not a plain PCM WAV: let PyAV try
    return _decode_av(data)


def _to_16k(pcm: np.ndarray, rate: int) -> np.ndarray:
    pcm = pcm.astype(np.float32)
    if rate != 16000 and pcm.size:
        import soxr

        pcm = soxr.resample(pcm, rate, 16000).astype(np.float32)
    return pcm


def _decode_av(data: bytes) -> np.ndarray:
    import av

    try:
        with av.open(io.BytesIO(data), "r") as container:
            if not container.streams.audio:
                raise BadRequest("the uploaded file has no audio stream", "file")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
            chunks = []
            for frame in container.decode(container.streams.audio[0]):
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    except BadRequest:
        raise
    except Exception as e:
        raise BadRequest(f"could not decode the uploaded file as audio ({type(e).__name__})", "file") from e
    return (np.concatenate(chunks) / 32768.0).astype(np.float32) if chunks else np.zeros(0, np.float32)


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def encode(pcm: bytes, rate: int, fmt: str) -> bytes:
    """Whole-utterance 16-bit mono PCM to ``fmt`` (wav by hand, the compressed ones through PyAV)."""
    if fmt == "pcm":
        return pcm
    if fmt == "wav":
        return wav_bytes(pcm, rate)
    import av

    _, container, codec = AUDIO_FORMATS[fmt]
    out = io.BytesIO()
    with av.open(out, "w", format=container) as c:
        stream = c.add_stream(codec, rate=48000 if codec == "libopus" else rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, np.int16).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=stream.rate)
        for f in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(f):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)
    return out.getvalue()


class _Resampler:
    """Streaming 16-bit resampling from the voice's rate to 24 kHz, chunk by chunk."""

    def __init__(self, in_rate: int, out_rate: int = OUT_RATE) -> None:
        import soxr

        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16") if in_rate != out_rate else None

    def __call__(self, pcm: bytes, last: bool = False) -> bytes:
        if self._stream is None:
            return pcm
        return self._stream.resample_chunk(np.frombuffer(pcm, np.int16), last=last).tobytes()


def create_app(engines: SpeechEngines) -> web.Application:
    """The HTTP app; engine calls run on one thread per engine, so ``/health`` answers during inference."""
    stt_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speech-stt")
    tts_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speech-tts")
    app = web.Application(middlewares=[_request_id, _errors], client_max_size=MAX_UPLOAD)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "stt": engines.stt_model, "tts": engines.tts_model})

    async def models(_: web.Request) -> web.Response:
        names = [engines.stt_model, *STT_ALIASES, engines.tts_model, *TTS_ALIASES]
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "workbench"} for n in names]
        return web.json_response({"object": "list", "data": data})

    async def transcriptions(request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            raise BadRequest("send multipart/form-data with a 'file' field")
        form = await request.post()
        upload = form.get("file")
        if upload is None or not hasattr(upload, "file"):
            raise BadRequest("missing the 'file' field", "file")
        fmt = str(form.get("response_format") or "json")
        if fmt not in ("json", "text", "verbose_json"):
            raise BadRequest(
                f"response_format {fmt!r} is not supported: use json, text or verbose_json", "response_format"
            )
        pcm = decode_upload(upload.file.read())
        text = await asyncio.get_running_loop().run_in_executor(stt_pool, engines.transcribe, pcm)
        if fmt == "text":
            return web.Response(text=text, content_type="text/plain")
        if fmt == "verbose_json":
            language = str(form.get("language") or engines.language)
            duration = len(pcm) / 16000
            return web.json_response(
                {"task": "transcribe", "language": language, "duration": duration, "text": text, "segments": []}
            )
        return web.json_response({"text": text})

    async def speech(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadRequest("the body is not JSON") from e
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("'input' must be a non-empty string", "input")
        if len(text) > MAX_INPUT:
            raise BadRequest(f"'input' is over {MAX_INPUT} characters", "input")
        fmt = body.get("response_format") or "mp3"
        if fmt not in AUDIO_FORMATS:
            raise BadRequest(
                f"response_format {fmt!r} is not supported: use {', '.join(AUDIO_FORMATS)}", "response_format"
            )
        speed = body.get("speed", 1.0)
        if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
            raise BadRequest("'speed' must be a number from 0.25 to 4.0", "speed")

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def post(item: bytes | BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                stop.set()

        def produce() -> None:
            resample = _Resampler(engines.tts_sample_rate)
            try:
                for chunk in engines.pcm_chunks(text, float(speed)):
                    if stop.is_set():
                        return
                    post(resample(chunk))
                post(resample(b"", last=True))
                post(None)
            except Exception as e:  # surfaced on the loop side
                post(e)

        future = loop.run_in_executor(tts_pool, produce)
        try:
            first = await queue.get()  # a synthesis error before any audio is still a clean 500
            if isinstance(first, BaseException):
                raise first
            content_type = AUDIO_FORMATS[fmt][0]
            if fmt != "pcm":
                parts = [first] if first else []
                while (item := await queue.get()) is not None:
                    if isinstance(item, BaseException):
                        raise item
                    parts.append(item)
                audio = await loop.run_in_executor(None, encode, b"".join(parts), OUT_RATE, fmt)
                return web.Response(body=audio, content_type=content_type)
            headers = {
                "Content-Type": content_type,
                "X-Sample-Rate": str(OUT_RATE),
                "x-request-id": request[REQUEST_ID],
            }
            response = web.StreamResponse(headers=headers)
            await response.prepare(request)
            item: bytes | BaseException | None = first
            while item is not None:
                if isinstance(item, BaseException):
                    raise item  # after the headers: the client sees a cut-off body
                if item:
                    try:
                        await response.write(item)
                    except ConnectionResetError:  # the client stopped listening (an interrupted reply)
                        return response
                item = await queue.get()
            await response.write_eof()
            return response
        finally:
            stop.set()  # a client that went away stops synthesis at the next chunk
            await asyncio.shield(future)

    async def close_pools(_: web.Application) -> None:
        stt_pool.shutdown(wait=False, cancel_futures=True)
        tts_pool.shutdown(wait=False, cancel_futures=True)

    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_post("/v1/audio/speech", speech)
    app.on_cleanup.append(close_pools)
    return app


def openai_plugin_components(base_url: str) -> tuple[Any, Any]:
    """livekit-plugins-openai ``STT`` and ``TTS`` pointed at a speech server's ``base_url`` (``.../v1``)."""
    from livekit.plugins import openai as lk_openai

    stt = lk_openai.STT(base_url=base_url, api_key="unused", model="whisper-1", language="en")
    tts = lk_openai.TTS(base_url=base_url, api_key="unused", model="tts-1", response_format="pcm")
    return stt, tts


@dataclass(frozen=True)
class SpeechServerInfo:
    base_url: str
    stt_model: str
    tts_model: str
    pid: int
    log_path: Path


class SpeechServer(ManagedServer):
    """One speech server process; ``start`` is idempotent and respawns a process that died."""

    name = "speech server"
    log_stem = "speech-server"

    def __init__(
        self,
        stt: STTConfig | None = None,
        tts: TTSConfig | None = None,
        log_dir: Path | str = Path(".workbench/logs"),
        port: int | None = None,
        start_timeout: float = 60.0,
        engines: str | None = None,
        engines_args: dict[str, Any] | None = None,
    ) -> None:
        """``engines`` (``"module:callable"``, called with ``engines_args``) replaces the embedded models in the
        child, e.g. ``"workbench.faults.speech:FixedDelayEngines"``."""
        self.stt_config = stt or STTConfig()
        self.tts_config = tts or TTSConfig()
        self.engines, self.engines_args = engines, engines_args or {}
        self._health: dict[str, str] = {}
        super().__init__(log_dir, port, start_timeout)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def health_url(self) -> str:
        return f"{self.url}/health"

    def on_healthy(self, response: Any) -> None:
        self._health = response.json()

    def child_env(self, env: dict[str, str]) -> dict[str, str]:
        env.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: models come from installed packages
        return env

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "workbench.models.speech_server",
            str(os.getpid()),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--stt",
            self.stt_config.model_dump_json(),
            "--tts",
            self.tts_config.model_dump_json(),
            *(["--engines", self.engines, "--engines-args", json.dumps(self.engines_args)] if self.engines else []),
        ]

    def start(self) -> SpeechServerInfo:
        """Start (or confirm) the server and wait until ``/health`` answers, models loaded."""
        with self._lock:
            if not self.alive():
                self._spawn()
            self._wait_healthy()
            assert self._proc is not None
            h = self._health
            return SpeechServerInfo(self.base_url, h["stt"], h["tts"], self._proc.pid, self.log_path)

    ensure_running = start


def main(argv: list[str] | None = None) -> None:
    """Child-process entry: load the models, then serve until SIGTERM or the parent is gone."""
    from workbench.models._llama_serve import _exit_with_parent

    p = argparse.ArgumentParser(prog="python -m workbench.models.speech_server")
    p.add_argument("parent_pid", type=int)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--stt", default="{}", help="STTConfig as JSON")
    p.add_argument("--tts", default="{}", help="TTSConfig as JSON")
    p.add_argument("--engines", help="module:callable building the engines instead of the embedded models")
    p.add_argument("--engines-args", default="{}", help="keyword arguments for --engines, as JSON")
    args = p.parse_args(argv)
    threading.Thread(target=_exit_with_parent, args=(args.parent_pid,), daemon=True).start()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    t0 = time.perf_counter()
    engines: SpeechEngines
    if args.engines:
        import importlib

        module, attr = args.engines.split(":")
        engines = getattr(importlib.import_module(module), attr)(**json.loads(args.engines_args))
    else:
        engines = EmbeddedEngines(STTConfig.model_validate_json(args.stt), TTSConfig.model_validate_json(args.tts))
    log.info("models loaded in %.2f s: %s, %s", time.perf_counter() - t0, engines.stt_model, engines.tts_model)
    web.run_app(create_app(engines), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
