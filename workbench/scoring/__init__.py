"""Per-turn scoring: text normalisation, WER, and (later) registered scorers."""

from workbench.scoring.wer import normalize_text, wer

__all__ = ["normalize_text", "wer"]
