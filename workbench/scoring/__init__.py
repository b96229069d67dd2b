"""Per-turn scoring: registered scorers that add columns to the turn table, and their storage.

``score_run(df, names=None, judge=None)`` runs them; ``workbench score RUN`` stores the result
next to the run. See :mod:`workbench.scoring.base` for the registry and :mod:`.offline` /
:mod:`.judge` for the scorers. A scorer of your own declares each column as a :class:`Metric`
(label, unit, which way is better), and compare, the report and gates use it like a built-in one.
"""

from workbench.core.metrics import Metric
from workbench.core.wer import normalize_text, wer
from workbench.scoring.base import (
    SCORERS,
    ScoreContext,
    Scorer,
    ScoreReport,
    ScorerOutcome,
    available_scorers,
    score_run,
    scorer,
)
from workbench.scoring.facts import canonical_tokens, fact_mentioned, fact_recall, missed_facts

__all__ = [
    "SCORERS",
    "Metric",
    "ScoreContext",
    "ScoreReport",
    "Scorer",
    "ScorerOutcome",
    "available_scorers",
    "canonical_tokens",
    "fact_mentioned",
    "fact_recall",
    "missed_facts",
    "normalize_text",
    "score_run",
    "scorer",
    "wer",
]
