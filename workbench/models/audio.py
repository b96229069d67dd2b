"""Small audio conversions shared by the STT, TTS and replay code."""

from __future__ import annotations

import numpy as np
import soxr
from livekit import rtc


def frames_to_mono_f32(buffer: rtc.AudioFrame | list[rtc.AudioFrame], rate: int = 16000) -> np.ndarray:
    """LiveKit frames (int16, any rate, any channels) to mono float32 at ``rate``."""
    frame = rtc.combine_audio_frames(buffer)
    pcm = np.frombuffer(frame.data, dtype=np.int16).astype(np.float32) / 32768.0
    if frame.num_channels > 1:
        pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1)
    if frame.sample_rate != rate and pcm.size:
        pcm = soxr.resample(pcm, frame.sample_rate, rate).astype(np.float32)
    return pcm


def f32_to_int16_bytes(pcm: np.ndarray) -> bytes:
    return (np.clip(pcm, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()


def pcm_to_frames(pcm: np.ndarray, rate: int, frame_ms: int = 10) -> list[rtc.AudioFrame]:
    """Mono float32 to 10 ms int16 frames, as a microphone track would deliver them."""
    step = rate * frame_ms // 1000
    data = np.clip(pcm, -1.0, 1.0)
    pad = (-len(data)) % step
    if pad:
        data = np.concatenate([data, np.zeros(pad, dtype=np.float32)])
    ints = (data * 32767.0).astype(np.int16)
    return [rtc.AudioFrame(ints[i : i + step].tobytes(), rate, 1, step) for i in range(0, len(ints), step)]
