"""Word error rate with number and case normalisation ("8" and "eight" are the same word).

A pure text function: the model doctor, the voice harness and the WER scorer all use this one definition.
"""

from __future__ import annotations

import re

import jiwer

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_to_words(n: int) -> str:
    """Spoken English for 0..999,999 (what a caller says and Whisper may write as digits)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    if n < 1_000_000:
        rest = n % 1000
        return number_to_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_to_words(rest))
    return str(n)


def normalize_text(text: str) -> str:
    """Lower case, digits spelled out, '$' and '%' as words, punctuation dropped."""
    t = text.lower().replace(",", "")
    t = re.sub(r"\$(\d+)", r"\1 dollars", t)
    t = t.replace("%", " percent")
    t = re.sub(r"(\d+)(st|nd|rd|th)\b", r"\1", t)
    t = re.sub(r"\d+", lambda m: f" {number_to_words(int(m.group()))} ", t)
    t = re.sub(r"[^a-z' ]+", " ", t).replace("-", " ")
    return " ".join(t.split())


def wer(reference: str, hypothesis: str) -> float:
    """WER after normalisation; an empty reference scores 0 only for an empty hypothesis."""
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp))
