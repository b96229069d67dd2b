"""Record the pause set: caller turns that pause mid-utterance, for measuring end of turn against cut-offs.

    .venv/bin/python datasets/tools/record_pauses.py            # (re)write datasets/dianachat_pauses
    .venv/bin/python datasets/tools/record_pauses.py --check    # re-record in a temp dir, compare: 1 if any differs

Each turn is a question to the demo clinic said in phrases, with exact silences of 0.25-0.6 s between them
(``TURNS``): hesitations ("Um, so ... how much does a visit cost") and trailing-off phrasing ("I was
wondering... about your hours"). Every phrase is synthesised on its own with the embedded Piper voice
(en_US joe, deterministic, as ``record_audio.py`` records the demo), trimmed to its speech (first to last sample
within 40 dB of its peak), and the phrases are joined by the pauses; the take is peak-normalised to -3 dBFS with
0.3 s of silence before and 0.8 s after, 16 kHz mono 16-bit WAV. ``audio_meta`` records the speech span (the
first phrase's start to the last one's end), so a reply that starts before ``speech_end_s`` cut the caller
off. The longest pause of a turn is in its tags (``pause-0.45``), with ``pauses`` and ``trailing-off``.

Every conversation is a single turn (a split turn cannot spill into the next one); ``knowledge/`` is a copy of
the demo's, so the extractive and RAG strategies answer from the same documents. A re-run gives byte-identical
files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_audio import RATE, _to_float, _trim, _write, check, padded_take

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "dianachat_demo"
OUT = ROOT / "dianachat_pauses"

# id, phrases, the pauses between them (s), whether it trails off, the demo documents that answer it
TURNS: list[tuple[str, list[str], list[float], bool, list[str]]] = [
    ("p01", ["What time do you open", "on Saturdays at Main Street?"], [0.3], False, ["hours-main-street.md"]),
    ("p02", ["I was wondering...", "about your hours at Lakeside on Fridays."], [0.5], True, ["hours-lakeside.md"]),
    ("p03", ["Do you take", "Blue Cross insurance?"], [0.4], False, ["insurance.md"]),
    (
        "p04",
        ["Um, so", "how much does a regular visit cost", "without insurance?"],
        [0.35, 0.45],
        False,
        ["prices-medical-visits.md"],
    ),
    (
        "p05",
        ["I need a refill on my prescription, and...", "how long does that take?"],
        [0.55],
        True,
        ["prescription-refills.md"],
    ),
    ("p06", ["Where can I park", "when I come to the Main Street clinic?"], [0.25], False, ["parking.md"]),
    ("p07", ["My daughter needs her vaccines, so...", "do you see children?"], [0.6], True, ["pediatrics.md"]),
    (
        "p08",
        ["Can I book", "a physiotherapy appointment", "for next week?"],
        [0.3, 0.5],
        False,
        ["physiotherapy.md", "booking-appointments.md"],
    ),
    ("p09", ["I'm not sure if...", "if you do telehealth visits?"], [0.45], True, ["telehealth.md"]),
    ("p10", ["What's the phone number", "for lab results?"], [0.6], False, ["lab-results.md", "phone-extensions.md"]),
    ("p11", ["If I need to cancel,", "how much notice do I have to give?"], [0.4], False, ["cancellation-policy.md"]),
    (
        "p12",
        ["Well, I was thinking maybe...", "a walk-in visit today?"],
        [0.55],
        True,
        ["walk-in-same-day.md"],
    ),
    ("p13", ["Do you have interpreters", "who speak Spanish?"], [0.35], False, ["interpreters-languages.md"]),
    ("p14", ["Hi, um,", "are you open on New Year's Day?"], [0.5], False, ["holiday-closures-2026.md"]),
]


def take(voice: object, phrases: list[str], pauses: list[float]) -> tuple[np.ndarray, dict[str, float]]:
    """The phrases joined by exact silences, padded and normalised like the demo's takes; its speech span."""
    parts: list[np.ndarray] = []
    for i, phrase in enumerate(phrases):
        pcm = voice.synthesize_bytes(phrase)  # type: ignore[attr-defined]
        speech = _trim(soxr.resample(_to_float(pcm), voice.sample_rate, RATE).astype(np.float32))  # type: ignore[attr-defined]
        if i:
            parts.append(np.zeros(round(pauses[i - 1] * RATE), np.float32))
        parts.append(speech)
    return padded_take(np.concatenate(parts))


def user_text(phrases: list[str]) -> str:
    """What the caller says: the phrases in order (a trailing "..." stays, as written)."""
    return " ".join(phrases)


def record(out_dir: Path) -> tuple[list[str], dict[str, str]]:
    """Writes the audio and knowledge under ``out_dir``; returns the JSONL lines and the files' hashes."""
    from workbench.models import ModelStack

    hashes: dict[str, str] = {}
    lines: list[str] = []
    with ModelStack() as stack:
        voice = stack.tts("piper")
        for cid, phrases, pauses, trailing, docs in TURNS:
            assert len(pauses) == len(phrases) - 1 and all(0.25 <= p <= 0.6 for p in pauses), cid
            audio, meta = take(voice, phrases, pauses)
            rel = f"audio/{cid}_0_piper.wav"
            _write(out_dir / rel, audio, RATE, "PCM_16")
            hashes[rel] = hashlib.sha256((out_dir / rel).read_bytes()).hexdigest()
            tags = ["pauses", *(["trailing-off"] if trailing else []), f"pause-{max(pauses):.2f}", "single-turn"]
            turn = {
                "user": user_text(phrases),
                "audio": {"piper": rel},
                "audio_meta": {"piper": meta},
                "contexts": [f"knowledge/{d}" for d in docs],
            }
            lines.append(json.dumps({"id": cid, "tags": tags, "turns": [turn]}, ensure_ascii=False))
            print(f"{cid}: pauses {pauses}, speech ends at {meta['speech_end_s']} s", file=sys.stderr)
    (out_dir / "knowledge").mkdir(parents=True, exist_ok=True)
    for doc in sorted((DEMO / "knowledge").iterdir()):
        shutil.copyfile(doc, out_dir / "knowledge" / doc.name)
        hashes[f"knowledge/{doc.name}"] = hashlib.sha256(doc.read_bytes()).hexdigest()
    return lines, hashes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="re-record into a temp dir and compare; write nothing")
    args = ap.parse_args(argv)
    if not args.check:
        lines, _ = record(args.out)
        (args.out / "conversations.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        lines, hashes = record(Path(tmp))
    return check(args.out, lines, hashes)


if __name__ == "__main__":
    sys.exit(main())
