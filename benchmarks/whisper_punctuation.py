"""Is Whisper's punctuation an end-of-turn signal? For each pause-set question (datasets/tools/record_pauses.py),
Piper says its first phrases alone and then whole, Whisper tiny.en transcribes each, and the script counts the
first phrases Whisper closes with "?", "." or "!" as if the caller had finished (docs/latency.md, early transcripts).

    .venv/bin/python benchmarks/whisper_punctuation.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soxr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "datasets" / "tools"))

from record_pauses import TURNS  # noqa: E402

from workbench.models import ModelStack  # noqa: E402


def main() -> int:
    closed = 0
    with ModelStack() as stack:
        tts, stt = stack.tts("piper"), stack.stt()

        def heard(text: str) -> str:
            pcm = np.frombuffer(tts.synthesize_bytes(text), dtype=np.int16).astype(np.float32) / 32768
            return stt.transcribe(soxr.resample(pcm, tts.sample_rate, 16000))[0]

        for cid, phrases, _, _, _ in TURNS:
            first = heard(phrases[0])
            ends = first.rstrip().endswith(("?", ".", "!")) and not first.rstrip().endswith("...")
            closed += ends
            print(f"{cid}  {first!r:45}  {'closed' if ends else 'open'}  | whole: {heard(' '.join(phrases))!r}")
    print(f"{closed} of {len(TURNS)} first phrases closed as complete")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
