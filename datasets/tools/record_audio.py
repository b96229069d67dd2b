"""Record every user turn of a dataset with the embedded TTS voices, deterministically.

    .venv/bin/python datasets/tools/record_audio.py [--dataset datasets/dianachat_demo] [--only c001,c002] [--check]

Per turn it writes (names ``audio/<id>_<turn>_<variant>.wav``):

- ``piper``: Piper (joe, deterministic: no noise), 16 kHz mono 16-bit PCM.
- ``espeak``: espeak-ng (en-us), 16 kHz mono 16-bit PCM: a second, very different speaker.
- ``piper-8k``: the Piper file as a phone line carries it: band-limited to 300-3400 Hz, stored at
  8 kHz as G.711 mu-law WAV (the loader upsamples it back to 16 kHz).
- ``piper-noisy`` (conversations in ``NOISY``): the Piper file plus seeded pink noise at 10 dB SNR.

Each file is the trimmed speech peak-normalised to -3 dBFS, with exactly 0.3 s of silence before
and 0.8 s after; the true speech start/end (seconds) go into the turn's ``audio_meta``. Nothing
else in conversations.jsonl changes. Running it again gives byte-identical files (``--check``
verifies that without writing).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy import signal

RATE = 16000
PHONE_RATE = 8000
LEAD_S, TAIL_S = 0.3, 0.8
PEAK = 10 ** (-3 / 20)
TRIM_DB = -40.0  # speech = from the first to the last sample within 40 dB of the peak
SNR_DB = 10.0
NOISY = (*(f"c{i:03d}" for i in range(1, 22)), "c022", "c026")
"""The single-turn calls plus two short follow-ups: a paired clean/noisy slice within the size budget."""


def _to_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0


def _trim(x: np.ndarray) -> np.ndarray:
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak == 0.0:
        raise RuntimeError("the TTS produced silence")
    loud = np.nonzero(np.abs(x) >= peak * 10 ** (TRIM_DB / 20))[0]
    return x[loud[0] : loud[-1] + 1]


def _quantise(x: np.ndarray) -> np.ndarray:
    """Round to 16-bit steps now, so the noise and phone variants derive from exactly the stored clean file."""
    return np.round(np.clip(x, -1.0, 32767 / 32768) * 32768.0).astype(np.int16).astype(np.float32) / 32768.0


def clean_take(pcm: bytes, source_rate: int) -> tuple[np.ndarray, dict[str, float]]:
    """TTS output -> padded 16 kHz take and its speech span."""
    x = soxr.resample(_to_float(pcm), source_rate, RATE).astype(np.float32)
    return padded_take(_trim(x))


def padded_take(speech: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Trimmed 16 kHz speech -> the take (peak-normalised, LEAD_S before and TAIL_S after) and its speech span."""
    speech = speech * (PEAK / float(np.abs(speech).max()))
    lead, tail = round(LEAD_S * RATE), round(TAIL_S * RATE)
    take = _quantise(np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(tail, np.float32)]))
    meta = {
        "speech_start_s": round(lead / RATE, 4),
        "speech_end_s": round((lead + len(speech)) / RATE, 4),
        "duration_s": round(len(take) / RATE, 4),
    }
    return take, meta


def phone_take(take: np.ndarray) -> np.ndarray:
    """300-3400 Hz band (zero-phase, so the speech span does not move) at 8 kHz."""
    low = soxr.resample(take, RATE, PHONE_RATE).astype(np.float64)
    sos = signal.butter(4, [300, 3400], btype="bandpass", fs=PHONE_RATE, output="sos")
    return np.clip(signal.sosfiltfilt(sos, low), -1.0, 1.0).astype(np.float32)


def pink_noise(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    noise = np.fft.irfft(spectrum / np.sqrt(f), n)
    return (noise / np.sqrt(np.mean(noise**2))).astype(np.float32)


def noisy_take(take: np.ndarray, meta: dict[str, float], seed_key: str) -> np.ndarray:
    """Continuous pink noise under the whole file, SNR measured over the speech span."""
    a, b = round(meta["speech_start_s"] * RATE), round(meta["speech_end_s"] * RATE)
    speech_power = float(np.mean(take[a:b].astype(np.float64) ** 2))
    noise = pink_noise(len(take), zlib.crc32(seed_key.encode()))
    mixed = take + noise * np.sqrt(speech_power / 10 ** (SNR_DB / 10))
    peak = float(np.abs(mixed).max())
    return mixed / peak * PEAK if peak > PEAK else mixed


def _write(path: Path, x: np.ndarray, rate: int, subtype: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if subtype == "PCM_16":  # exact 16-bit steps (libsndfile would scale floats by 32767)
        x = np.round(np.clip(x, -1.0, 32767 / 32768) * 32768.0).astype(np.int16)
    sf.write(path, x, rate, subtype=subtype, format="WAV")


def record(dataset: Path, out_dir: Path, only: set[str] | None) -> tuple[list[str], dict[str, str]]:
    """Writes the audio under ``out_dir/audio``; returns the updated JSONL lines and file hashes."""
    from workbench.models import ModelStack

    lines = (dataset / "conversations.jsonl").read_text(encoding="utf-8").splitlines()
    hashes: dict[str, str] = {}
    updated: list[str] = []
    with ModelStack() as stack:
        voices = {"piper": stack.tts("piper"), "espeak": stack.tts("espeak")}
        for line in lines:
            conv = json.loads(line)
            if only and conv["id"] not in only:
                updated.append(line)
                continue
            for i, turn in enumerate(conv["turns"]):
                stem = f"audio/{conv['id']}_{i}"
                audio: dict[str, str] = {}
                meta: dict[str, dict[str, float]] = {}
                takes = {}
                for name, voice in voices.items():
                    take, span = clean_take(voice.synthesize_bytes(turn["user"]), voice.sample_rate)
                    takes[name] = take
                    audio[name], meta[name] = f"{stem}_{name}.wav", span
                    _write(out_dir / audio[name], take, RATE, "PCM_16")
                audio["piper-8k"], meta["piper-8k"] = f"{stem}_piper-8k.wav", dict(meta["piper"])
                _write(out_dir / audio["piper-8k"], phone_take(takes["piper"]), PHONE_RATE, "ULAW")
                if conv["id"] in NOISY:
                    audio["piper-noisy"], meta["piper-noisy"] = f"{stem}_piper-noisy.wav", dict(meta["piper"])
                    noisy = noisy_take(takes["piper"], meta["piper"], f"{conv['id']}/{i}")
                    _write(out_dir / audio["piper-noisy"], noisy, RATE, "PCM_16")
                for rel in audio.values():
                    hashes[rel] = hashlib.sha256((out_dir / rel).read_bytes()).hexdigest()
                # audio fields right after the user text; every other key keeps its value and order
                rest = {k: v for k, v in turn.items() if k not in ("user", "audio", "audio_meta")}
                conv["turns"][i] = {"user": turn["user"], "audio": audio, "audio_meta": meta, **rest}
            updated.append(json.dumps(conv, ensure_ascii=False))
            print(f"{conv['id']}: {len(conv['turns'])} turn(s)", file=sys.stderr)
    return updated, hashes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", type=Path, default=Path(__file__).resolve().parents[1] / "dianachat_demo")
    ap.add_argument("--only", help="comma-separated conversation ids (default: all)")
    ap.add_argument("--check", action="store_true", help="re-record into a temp dir and compare; write nothing")
    args = ap.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    dataset: Path = args.dataset
    if not args.check:
        lines, _ = record(dataset, dataset, only)
        (dataset / "conversations.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        lines, hashes = record(dataset, Path(tmp), only)
    return check(dataset, lines, hashes)


def check(dataset: Path, lines: list[str], hashes: dict[str, str]) -> int:
    """A fresh recording (its conversation lines and file hashes) against the committed dataset: 1 if any differ."""
    current = (dataset / "conversations.jsonl").read_text(encoding="utf-8").splitlines()
    differ = [
        rel
        for rel, h in hashes.items()
        if not (dataset / rel).is_file() or hashlib.sha256((dataset / rel).read_bytes()).hexdigest() != h
    ]
    if lines != current:
        differ.append("conversations.jsonl")
    for rel in differ:
        print(f"differs: {rel}", file=sys.stderr)
    print(f"{len(hashes)} files checked, {len(differ)} differ", file=sys.stderr)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
