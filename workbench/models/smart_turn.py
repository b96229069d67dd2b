"""Smart Turn v3 (an end-of-turn audio model packaged in the ``pipecat-ai`` wheel) as a LiveKit turn detector.

The model (``smart-turn-v3.2-cpu.onnx``, BSD-2) and its numpy feature extractor ship inside ``pipecat-ai``; nothing is
downloaded. Install the wheel alone, without its dependencies (a full pipecat install pulls numba and another
protobuf): ``pip install --no-deps pipecat-ai==1.14.0``. Only those two files are read, by path: pipecat itself is
never imported. Name it in a config as a turn-detector factory::

    turn:
      detector: {use: "workbench.models.smart_turn:SmartTurn"}
      min_endpointing_delay: 0.3
      max_endpointing_delay: 1.0
    vad: {min_silence_duration: 0.3}   # LiveKit asks a streaming detector for at least 0.25 s

LiveKit streams the caller's audio into it and asks for a prediction after 0.2 s of silence; at the end-of-turn
decision, a probability below ``threshold`` ("the caller is not done") makes LiveKit wait ``max_endpointing_delay``
instead of ``min_endpointing_delay`` (resumed speech cancels the wait). The model reads the last 8 s of audio
(zero-padded), ~75 ms a prediction on one thread, run off the event loop.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions
from livekit.agents.voice.turn import TurnDetectionEvent

from workbench.models.assets import MissingAssetError

RATE = 16000
WINDOW_S = 8
MODEL = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
FEATURES = "pipecat/audio/turn/smart_turn/_whisper_features.py"


def packaged_files() -> tuple[Path, Path]:
    """The model and the feature extractor inside the installed ``pipecat-ai`` wheel (found by its metadata)."""
    from importlib import metadata

    try:
        dist = metadata.distribution("pipecat-ai")
    except metadata.PackageNotFoundError:
        dist = None
    files = tuple(Path(str(dist.locate_file(f))) for f in (MODEL, FEATURES)) if dist is not None else ()
    if len(files) != 2 or not all(f.is_file() for f in files):
        raise MissingAssetError(
            "the Smart Turn v3 end-of-turn model", "--no-deps pipecat-ai==1.14.0", "only its model file is used"
        )
    return files  # type: ignore[return-value]


def _load_features(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("workbench_smart_turn_features", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compute_whisper_log_mel_features


class SmartTurn:
    """LiveKit streaming turn detector on Smart Turn v3: end-of-turn probability from the caller's audio alone."""

    def __init__(
        self, model_path: str | None = None, threshold: float = 0.5, threads: int = 1, prediction_timeout: float = 1.0
    ) -> None:
        import onnxruntime as ort

        model, features = packaged_files() if model_path is None else (Path(model_path), packaged_files()[1])
        so = ort.SessionOptions()
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads, so.intra_op_num_threads = 1, threads
        self._session = ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])
        self._features = _load_features(features)
        self.threshold, self.prediction_timeout = threshold, prediction_timeout

    @property
    def model(self) -> str:
        return "smart-turn-v3.2"

    @property
    def provider(self) -> str:
        return "pipecat-ai (local)"

    def probability(self, audio: np.ndarray) -> float:
        """End-of-turn probability of 16 kHz mono float32 audio (its last 8 s, zero-padded in front)."""
        n = WINDOW_S * RATE
        x = audio[-n:] if len(audio) >= n else np.pad(audio, (n - len(audio), 0))
        feats = self._features(x.astype(np.float32), do_normalize=True)
        out = self._session.run(None, {"input_features": np.expand_dims(feats, 0).astype(np.float32)})
        return float(np.asarray(out[0]).reshape(-1)[0])

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> SmartTurnStream:
        return SmartTurnStream(self)


class SmartTurnStream:
    """One session's audio into :class:`SmartTurn` (LiveKit's ``_StreamingTurnDetectorStream`` protocol)."""

    def __init__(self, detector: SmartTurn) -> None:
        self._detector = detector
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._pending: asyncio.Future[TurnDetectionEvent] | None = None
        self._last_audio_at = 0.0

    model = property(lambda self: self._detector.model)
    provider = property(lambda self: self._detector.provider)
    is_fallback = property(lambda self: False)
    prediction_timeout = property(lambda self: self._detector.prediction_timeout)

    async def unlikely_threshold(self, language: Any) -> float | None:
        return self._detector.threshold

    async def backchannel_threshold(self, language: Any) -> float | None:
        return None

    async def supports_language(self, language: Any) -> bool:
        return True

    def push_audio(self, frame: rtc.AudioFrame) -> None:
        pcm = np.frombuffer(frame.data, dtype=np.int16).astype(np.float32) / 32768.0
        if frame.num_channels > 1:
            pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1)
        if frame.sample_rate != RATE:
            import soxr

            pcm = soxr.resample(pcm, frame.sample_rate, RATE).astype(np.float32)
        self._chunks.append(pcm)
        self._samples += len(pcm)
        self._last_audio_at = time.time()
        while self._chunks and self._samples - len(self._chunks[0]) >= WINDOW_S * RATE:
            self._samples -= len(self._chunks.pop(0))

    def predict(self) -> asyncio.Future[TurnDetectionEvent]:
        self.cancel_inference()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[TurnDetectionEvent] = loop.create_future()
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        heard_at = self._last_audio_at

        async def run() -> None:
            t0 = time.perf_counter()
            try:
                p = await asyncio.to_thread(self._detector.probability, audio)
            except Exception as e:  # LiveKit commits without a prediction when the future fails
                if not fut.done():
                    fut.set_exception(e)
                return
            if not fut.done():
                fut.set_result(
                    TurnDetectionEvent(
                        type="eot_prediction",
                        end_of_turn_probability=p,
                        last_speaking_time=heard_at,
                        detection_delay=time.time() - heard_at,
                        inference_duration=time.perf_counter() - t0,
                    )
                )

        task = loop.create_task(run())
        fut.add_done_callback(lambda f: task.cancel() if f.cancelled() else None)
        self._pending = fut
        return fut

    def cancel_inference(self, *, timed_out: bool = False) -> None:
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()
        self._pending = None

    def flush(self, reason: str | None = None) -> None:
        self.cancel_inference()
        self._chunks, self._samples = [], 0

    def end_input(self) -> None:
        self.cancel_inference()

    async def aclose(self) -> None:
        self.flush()
