"""Audio loading: every common format to 16 kHz mono float32, every bad file to AudioLoadError."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from workbench.replay.audio import AudioLoadError, load_audio, mp3_supported, probe_audio, to_frames, verify_audio


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spec)])


def wav_header(
    rate: int, channels: int, bits: int = 16, fmt: int = 1, data_size: int | None = None, n: int = 0
) -> bytes:
    """A hand-made RIFF/WAVE header, so tests can declare what real writers never would."""
    block = channels * bits // 8
    size = n * block if data_size is None else data_size
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, rate * block, block, bits)
    return (
        b"RIFF"
        + struct.pack("<I", (36 + size) & 0xFFFFFFFF)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt_chunk
        + b"data"
        + struct.pack("<I", size & 0xFFFFFFFF)
    )


def test_48k_stereo_wav_is_downmixed_and_resampled(tmp_path: Path) -> None:
    left, right = tone(440, 1.0, 48000, 0.6), tone(440, 1.0, 48000, 0.2)
    f = tmp_path / "s.wav"
    sf.write(f, np.stack([left, right], axis=1), 48000)
    a = load_audio(f)
    assert a.samples.dtype == np.float32 and a.samples.ndim == 1
    assert a.sample_rate == 16000 and len(a.samples) == 16000
    assert (a.source.sample_rate, a.source.channels, a.source.frames) == (48000, 2, 48000)
    mid = a.samples[2000:14000]
    assert np.abs(mid).max() == pytest.approx(0.4, abs=0.01)  # (0.6 + 0.2) / 2
    assert peak_hz(mid, 16000) == pytest.approx(440, abs=3)
    assert np.abs(load_audio(f, channel=1).samples[2000:14000]).max() == pytest.approx(0.2, abs=0.01)


def test_8k_mulaw_telephone_audio_is_upsampled(tmp_path: Path) -> None:
    f = tmp_path / "phone.wav"
    sf.write(f, tone(1000, 0.5, 8000), 8000, subtype="ULAW")
    a = load_audio(f)
    assert a.source.sample_rate == 8000 and a.source.subtype == "ULAW"
    assert len(a.samples) == 8000 and a.duration_s == pytest.approx(0.5)
    assert peak_hz(a.samples[1000:7000], 16000) == pytest.approx(1000, abs=4)


@pytest.mark.parametrize(("suffix", "fmt", "subtype"), [(".flac", "FLAC", "PCM_16"), (".ogg", "OGG", "VORBIS")])
def test_compressed_formats_load(tmp_path: Path, suffix: str, fmt: str, subtype: str) -> None:
    f = tmp_path / f"x{suffix}"
    sf.write(f, tone(440, 1.0, 22050), 22050, format=fmt, subtype=subtype)
    a = load_audio(f)
    assert a.source.format == fmt and len(a.samples) == 16000
    assert peak_hz(a.samples[2000:14000], 16000) == pytest.approx(440, abs=3)


def test_mp3_loads_or_says_how_to_convert(tmp_path: Path) -> None:
    f = tmp_path / "x.mp3"
    if mp3_supported():
        sf.write(f, tone(440, 1.0, 44100), 44100, format="MP3")
        a = load_audio(f)
        assert a.source.format == "MP3" and abs(len(a.samples) - 16000) < 400  # encoder padding
        assert peak_hz(a.samples[2000:14000], 16000) == pytest.approx(440, abs=3)
    else:
        f.write_bytes(b"ID3" + bytes(200))
        with pytest.raises(AudioLoadError, match="convert it to WAV or FLAC"):
            load_audio(f)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt ", "not a readable audio file"),  # truncated header
        (bytes(range(256)) * 40, "not a readable audio file"),  # garbage
        (wav_header(16000, 1, n=0), "no audio samples"),  # valid header, no data
        (wav_header(1, 1, n=100) + bytes(200), "absurd sample rate 1 Hz"),
        (wav_header(2_000_000_000, 1, n=100) + bytes(200), "not a readable audio file|absurd sample rate"),
    ],
)
def test_bad_files_are_audio_load_errors(tmp_path: Path, content: bytes, reason: str) -> None:
    f = tmp_path / "bad.wav"
    f.write_bytes(content)
    with pytest.raises(AudioLoadError, match=reason) as e:
        load_audio(f)
    assert e.value.path == str(f)


def test_huge_declared_data_size_is_refused_as_truncated_before_decoding(tmp_path: Path) -> None:
    data = (tone(440, 0.25, 16000) * 32767).astype("<i2").tobytes()
    f = tmp_path / "liar.wav"
    f.write_bytes(wav_header(16000, 1, data_size=0xFFFFFFF0) + data)
    with pytest.raises(AudioLoadError, match="truncated: the header declares 4294967280 bytes of audio data, the"):
        load_audio(f)


def cut(f: Path, keep: float) -> None:
    data = f.read_bytes()
    f.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize(
    ("fmt", "subtype"), [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("AIFF", "PCM_16"), ("W64", "PCM_16"), ("RF64", "PCM_24")]
)
def test_truncated_files_are_refused_not_shortened(tmp_path: Path, fmt: str, subtype: str) -> None:
    """libsndfile would decode the part that is there as shorter audio; the header says more is missing."""
    f = tmp_path / f"cut.{fmt.lower()}"
    sf.write(f, tone(440, 1.0, 16000), 16000, format=fmt, subtype=subtype)
    assert len(load_audio(f).samples) == 16000
    cut(f, 0.6)
    assert 0 < sf.info(str(f)).frames < 16000  # what a silent loader would have returned
    for check in (probe_audio, verify_audio, load_audio):
        with pytest.raises(
            AudioLoadError, match=r"truncated: the header declares \d+ bytes of audio data, the file holds \d+"
        ) as e:
            check(f)
        assert e.value.path == str(f)


def test_a_truncated_wav_missing_one_byte_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "cut.wav"
    sf.write(f, tone(440, 0.5, 16000), 16000, subtype="PCM_16")
    f.write_bytes(f.read_bytes()[:-1])
    with pytest.raises(AudioLoadError, match="declares 16000 bytes of audio data, the file holds 15999"):
        load_audio(f)


def test_trailing_chunks_after_the_data_are_not_truncation(tmp_path: Path) -> None:
    data = (tone(440, 0.25, 16000) * 32767).astype("<i2").tobytes()
    f = tmp_path / "list.wav"
    f.write_bytes(wav_header(16000, 1, n=4000) + data + b"LIST" + (4).to_bytes(4, "little") + b"INFO")
    assert len(load_audio(f).samples) == 4000 and verify_audio(f).frames == 4000


@pytest.mark.skipif(not mp3_supported(), reason="libsndfile without MP3")
def test_a_cut_mp3_is_refused_by_decoding(tmp_path: Path) -> None:
    f = tmp_path / "cut.mp3"
    sf.write(f, tone(440, 2.0, 44100), 44100, format="MP3")
    cut(f, 0.5)
    with pytest.raises(AudioLoadError, match=r"truncated: the header declares \d+ frames, only \d+ could be decoded"):
        load_audio(f)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused(tmp_path: Path, bad: float) -> None:
    x = tone(440, 1.0, 16000)
    x[8000] = bad
    f = tmp_path / "nan.wav"
    sf.write(f, x, 16000, subtype="FLOAT")
    for check in (verify_audio, load_audio):
        with pytest.raises(AudioLoadError, match=r"NaN or infinite samples \(first at 0.500 s\)"):
            check(f)
    probe_audio(f)  # the header alone cannot tell: only decoding finds them


def test_missing_file_directory_and_limits(tmp_path: Path) -> None:
    with pytest.raises(AudioLoadError, match="file not found"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioLoadError, match="not a regular file"):
        load_audio(tmp_path)
    f = tmp_path / "ok.wav"
    sf.write(f, tone(440, 2.0, 16000), 16000)
    with pytest.raises(AudioLoadError, match="over the 0 MB limit"):
        load_audio(f, max_bytes=1000)
    with pytest.raises(AudioLoadError, match="longer than the 1 s limit"):
        load_audio(f, max_duration_s=1.0)
    with pytest.raises(AudioLoadError, match="channel 1 requested, the file has 1"):
        load_audio(f, channel=1)


def test_probe_reads_the_header_only(tmp_path: Path) -> None:
    f = tmp_path / "p.wav"
    sf.write(f, np.zeros((8000, 2), np.float32), 8000)
    info = probe_audio(f)
    assert (info.sample_rate, info.channels, info.frames, info.duration_s) == (8000, 2, 8000, 1.0)


def test_to_frames_gives_10ms_int16_frames() -> None:
    frames = to_frames(tone(440, 0.105, 16000), 16000)
    assert len(frames) == 11  # 1680 samples -> 10 full frames + 1 padded
    assert all(fr.samples_per_channel == 160 and fr.sample_rate == 16000 for fr in frames)
    assert np.frombuffer(frames[-1].data, np.int16)[80:].max() == 0  # padding is silence


def test_verify_decodes_at_the_files_own_rate_and_reports_decoded_frames(tmp_path: Path) -> None:
    f = tmp_path / "v.wav"
    sf.write(f, np.zeros((4410, 2), np.float32), 44100)
    info = verify_audio(f)
    assert (info.sample_rate, info.channels, info.frames, info.duration_s) == (44100, 2, 4410, 0.1)
