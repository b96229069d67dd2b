"""Load user recordings for replay: any common file in, 16 kHz mono float32 out, or a clear error.

Every failure (missing, empty, corrupt, truncated, absurd header, NaN samples, too big, too long)
is an :class:`AudioLoadError`, so the harness can mark one turn ``bad_audio`` and keep going.
Decoding streams block by block through a soxr resampler: a header that declares gigabytes of
samples never allocates them, and memory stays at the size of the 16 kHz output.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import soxr
from livekit import rtc

from workbench.models.audio import pcm_to_frames

MAX_AUDIO_BYTES = 200 * 1024 * 1024
"""Files above this are refused before any decoding (a user turn is seconds, a whole call minutes)."""
MAX_DURATION_S = 4 * 3600.0
"""Decoded audio above this is refused (a corrupt header can make a small file decode forever)."""
MIN_RATE, MAX_RATE = 4000, 384_000
MAX_CHANNELS = 32
_BLOCK_FRAMES = 65536


class AudioLoadError(ValueError):
    """A recording cannot be used; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class AudioInfo:
    """What the file itself declares (before any conversion)."""

    path: str
    format: str
    subtype: str
    sample_rate: int
    channels: int
    frames: int
    size_bytes: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


@dataclass(frozen=True)
class LoadedAudio:
    """Mono float32 samples at ``sample_rate`` plus what the source file was."""

    samples: np.ndarray
    sample_rate: int
    source: AudioInfo

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def mp3_supported() -> bool:
    """libsndfile decodes MP3 from 1.1.0 on (built with mpg123); older builds do not."""
    return "MP3" in sf.available_formats()


def _check_file(path: Path, max_bytes: int) -> int:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AudioLoadError(path, "file not found") from None
    except OSError as e:
        raise AudioLoadError(path, f"cannot access file: {e.strerror or e}") from e
    if not path.is_file():
        raise AudioLoadError(path, "not a regular file")
    if st.st_size == 0:
        raise AudioLoadError(path, "empty file (0 bytes)")
    if st.st_size > max_bytes:
        raise AudioLoadError(path, f"file is {st.st_size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit")
    if path.suffix.lower() == ".mp3" and not mp3_supported():
        raise AudioLoadError(
            path,
            f"MP3 needs libsndfile >= 1.1 with MP3 support (this one is {sf.__libsndfile_version__}); "
            "convert it to WAV or FLAC",
        )
    return st.st_size


def _check_header(path: Path, f: sf.SoundFile, size: int) -> AudioInfo:
    info = AudioInfo(str(path), f.format, f.subtype, int(f.samplerate), int(f.channels), int(f.frames), size)
    if not MIN_RATE <= info.sample_rate <= MAX_RATE:
        raise AudioLoadError(path, f"absurd sample rate {info.sample_rate} Hz (accepted: {MIN_RATE}-{MAX_RATE} Hz)")
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise AudioLoadError(path, f"absurd channel count {info.channels} (accepted: 1-{MAX_CHANNELS})")
    return info


# -- truncation: libsndfile quietly shortens a file whose header declares more data than it holds ---
@dataclass(frozen=True)
class _Layout:
    """How one container family lays out its chunks."""

    byteorder: Literal["little", "big"]
    first_chunk: int  # offset of the first chunk after the file header
    id_len: int
    size_len: int
    align: int
    data_id: bytes
    size_counts_header: bool = False  # Wave64 chunk sizes include the chunk's own header


_W64_RIFF = b"riff" + bytes.fromhex("2e91cf11a5d628db04c10000")
_W64_DATA = b"data" + bytes.fromhex("f3acd3118cd100c04f8edb8a")
_MAX_CHUNKS = 4096


def _layout(head: bytes) -> _Layout | None:
    kind, form = head[:4], head[8:12]
    if kind in (b"RIFF", b"RF64", b"BW64") and form == b"WAVE":
        return _Layout("little", 12, 4, 4, 2, b"data")
    if kind == b"RIFX" and form == b"WAVE":
        return _Layout("big", 12, 4, 4, 2, b"data")
    if kind == b"FORM" and form in (b"AIFF", b"AIFC"):
        return _Layout("big", 12, 4, 4, 2, b"SSND")
    if head[:16] == _W64_RIFF:
        return _Layout("little", 40, 16, 8, 8, _W64_DATA, size_counts_header=True)
    return None


def _data_chunk(path: Path, size: int) -> tuple[int, int] | None:
    """(declared, present) bytes of the audio data chunk of a WAV/RF64/W64/AIFF file; None otherwise.

    Walks the container's chunk headers (a few small reads). None when the file is no such
    container or has no data chunk: libsndfile then reports its own error.
    """
    with path.open("rb") as f:
        head = f.read(40)
        if len(head) < 16 or (lay := _layout(head)) is None:
            return None
        rf64_data: int | None = None  # RF64/BW64 keep the real data size in the ds64 chunk
        pos = lay.first_chunk
        for _ in range(_MAX_CHUNKS):
            f.seek(pos)
            hdr = f.read(lay.id_len + lay.size_len)
            if len(hdr) < lay.id_len + lay.size_len:
                return None
            cid, body = hdr[: lay.id_len], pos + len(hdr)
            csize = int.from_bytes(hdr[lay.id_len :], lay.byteorder)
            if lay.size_counts_header:
                csize -= len(hdr)
                if csize < 0:
                    return None
            if cid == b"ds64" and head[:4] in (b"RF64", b"BW64") and len(ds64 := f.read(16)) == 16:
                rf64_data = int.from_bytes(ds64[8:16], "little")
            if cid == lay.data_id:
                if rf64_data is not None and csize == 0xFFFFFFFF:
                    csize = rf64_data
                return csize, size - body
            pos = body + csize + (-csize % lay.align)
            if pos >= size:
                return None
        return None


def _check_truncation(path: Path, size: int) -> None:
    try:
        found = _data_chunk(path, size)
    except OSError as e:
        raise AudioLoadError(path, f"cannot read file: {e.strerror or e}") from e
    if found is not None and found[0] > found[1]:
        declared, present = found
        raise AudioLoadError(
            path,
            f"truncated: the header declares {declared} bytes of audio data, the file holds {present} "
            "(a copy cut short, or a recorder that never finished its header: re-export the file)",
        )


def _check_decoded_length(path: Path, info: AudioInfo, decoded: int) -> None:
    """Fewer frames decoded than the header declares: the file was cut short (MP3 counts are estimates)."""
    shortfall = info.frames - decoded
    slack = int(0.01 * info.frames) + 2304 if info.format == "MP3" else 0
    if shortfall > slack:
        raise AudioLoadError(
            path, f"truncated: the header declares {info.frames} frames, only {decoded} could be decoded"
        )


def probe_audio(path: str | os.PathLike[str], *, max_bytes: int = MAX_AUDIO_BYTES) -> AudioInfo:
    """Header-only check (cheap): exists, size, readable format, sane rate and channels, not truncated.

    Does not decode: NaN samples or a cut inside compressed data show only in :func:`verify_audio`.
    """
    p = Path(path)
    size = _check_file(p, max_bytes)
    _check_truncation(p, size)
    try:
        with sf.SoundFile(p) as f:
            info = _check_header(p, f, size)
    except AudioLoadError:
        raise
    except Exception as e:
        raise _open_error(p, e) from e
    if info.frames <= 0:
        raise AudioLoadError(p, "no audio samples in the file")
    return info


def _blocks(p: Path, f: sf.SoundFile, info: AudioInfo, max_duration_s: float) -> Iterator[np.ndarray]:
    """Every block of the file as float32 (frames x channels), checked finite, then checked complete."""
    max_frames = int(max_duration_s * info.sample_rate)
    read = 0
    while True:
        block = f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
        if not len(block):
            break
        if read + len(block) > max_frames:
            raise AudioLoadError(p, f"longer than the {max_duration_s:.0f} s limit")
        if not (finite := np.isfinite(block).all(axis=1)).all():
            at = (read + int(np.argmin(finite))) / info.sample_rate
            raise AudioLoadError(p, f"contains NaN or infinite samples (first at {at:.3f} s)")
        read += len(block)
        yield block
    if read == 0:
        raise AudioLoadError(p, "no audio samples in the file")
    _check_decoded_length(p, info, read)


def _open_error(p: Path, e: Exception) -> AudioLoadError:
    if isinstance(e, MemoryError):
        return AudioLoadError(p, "too large to decode in memory")
    # libsndfile/soxr report corrupt data as several error types
    return AudioLoadError(p, f"not a readable audio file (corrupt or unsupported format): {e}")


def verify_audio(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_AUDIO_BYTES,
    max_duration_s: float = MAX_DURATION_S,
) -> AudioInfo:
    """Everything :func:`load_audio` refuses, found by decoding the whole file once at its own rate.

    What ``workbench validate`` runs per file: no resampling and no samples kept, so it costs a
    read of the file. The returned ``frames`` are the frames actually decoded.
    """
    p = Path(path)
    size = _check_file(p, max_bytes)
    _check_truncation(p, size)
    try:
        with sf.SoundFile(p) as f:
            info = _check_header(p, f, size)
            read = sum(len(block) for block in _blocks(p, f, info, max_duration_s))
    except AudioLoadError:
        raise
    except Exception as e:
        raise _open_error(p, e) from e
    return AudioInfo(info.path, info.format, info.subtype, info.sample_rate, info.channels, read, size)


def load_audio(
    path: str | os.PathLike[str],
    target_rate: int = 16000,
    *,
    channel: int | None = None,
    max_bytes: int = MAX_AUDIO_BYTES,
    max_duration_s: float = MAX_DURATION_S,
) -> LoadedAudio:
    """Decode WAV/FLAC/OGG/MP3 (whatever libsndfile reads) to mono float32 at ``target_rate``.

    Several channels are averaged, unless ``channel`` picks one (LiveKit's session recordings
    are stereo: channel 0 is the user, 1 the agent). Any rate is resampled with soxr, so 8 kHz
    telephone audio comes back upsampled to 16 kHz. A truncated file (its header declares more
    data than it holds) or NaN/infinite samples are an :class:`AudioLoadError`, never shorter audio.
    """
    p = Path(path)
    if not MIN_RATE <= target_rate <= MAX_RATE:
        raise ValueError(f"target_rate {target_rate} outside {MIN_RATE}-{MAX_RATE} Hz")
    size = _check_file(p, max_bytes)
    _check_truncation(p, size)
    chunks: list[np.ndarray] = []
    read = 0
    try:
        with sf.SoundFile(p) as f:
            info = _check_header(p, f, size)
            if channel is not None and not 0 <= channel < info.channels:
                raise AudioLoadError(p, f"channel {channel} requested, the file has {info.channels}")
            resampler = (
                soxr.ResampleStream(info.sample_rate, target_rate, 1, dtype="float32")
                if info.sample_rate != target_rate
                else None
            )
            for block in _blocks(p, f, info, max_duration_s):
                read += len(block)
                mono = block[:, channel] if channel is not None else block.mean(axis=1)
                mono = np.ascontiguousarray(mono, dtype=np.float32)
                chunks.append(resampler.resample_chunk(mono) if resampler else mono)
            if resampler is not None:
                chunks.append(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    except AudioLoadError:
        raise
    except Exception as e:
        raise _open_error(p, e) from e
    samples = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    if samples.size == 0:
        raise AudioLoadError(p, "no audio samples in the file")
    info = AudioInfo(info.path, info.format, info.subtype, info.sample_rate, info.channels, read, size)
    return LoadedAudio(samples, target_rate, info)


def to_frames(samples: np.ndarray, rate: int, frame_ms: int = 10) -> list[rtc.AudioFrame]:
    """Mono float32 to int16 ``rtc.AudioFrame``s of ``frame_ms``, as a microphone track delivers them."""
    return pcm_to_frames(samples, rate, frame_ms)
