"""What compare, gates, the summary and the report share: error rows, turn pairing, the signed-rank test, metrics.

One definition each, so that a turn counts as an error, two turns pair up and a tiny difference counts as
a tie in the same way in the comparison tables, the run summary and the eval gates. numpy, pandas and
scipy are imported where they are used: the gates, and through them the worker, import this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from workbench.core.cells import is_set
from workbench.core.metrics import METRICS, Direction, Metric, MetricCatalogue, declare
from workbench.scoring.base import available_scorers

if TYPE_CHECKING:
    import pandas as pd

PAIR_KEY = ("conversation_id", "turn_index", "repetition", "mode", "voice")
"""Two rows are the same turn (of two strategies, or of two runs) when these match."""
ITEM_KEY = ("conversation_id", "turn_index", "mode", "voice")
"""The unit of resampling and testing: repetitions of one turn are not independent, so they are averaged."""
ZERO = 1e-12
"""A paired difference this small is a tie (float noise, e.g. after subtracting a tolerance), not a direction."""
ERROR_RATE = "error_rate"

declare(Metric(ERROR_RATE, "error rate", "share of turns", "lower", "turns with an error_kind, recovered or not"))

Alternative = Literal["two-sided", "greater", "less"]


# -- the catalogue, loaded --------------------------------------------------------------------------
def catalogue() -> MetricCatalogue:
    """The metric catalogue with the turn table's and every registered scorer's metrics in it.

    Each declares its metrics when its module is imported; this imports them, so a lookup never
    misses a built-in metric because nothing had loaded it yet.
    """

    available_scorers()
    return METRICS


def direction(name: str) -> Direction | None:
    """Which way is better for column ``name``; None when it has no better side or nobody declared it."""
    m = catalogue().metric(name)
    return m.direction if m is not None else None


def label(name: str) -> str:
    """The column's label for plots and tables (its name when undeclared)."""
    return catalogue().label(name)


def has_numbers(values: pd.Series) -> bool:
    """True when a column holds at least one number: lists, text and flags are not scores."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_bool_dtype(values):
        return False
    if pd.api.types.is_numeric_dtype(values):
        return bool(values.notna().any())
    return any(
        isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_) and not math.isnan(v)
        for v in values
    )


def score_columns(df: pd.DataFrame) -> list[str]:
    """Every registered scorer's column that holds numbers in ``df``, in registration order.

    What compare, the summary and the report show by default: a user's own scorer is in it as soon as it is registered.
    """

    catalogue()
    names = dict.fromkeys(c for cls in available_scorers().values() for c in cls.columns)
    return [c for c in names if c in df.columns and has_numbers(df[c])]


# -- rows ---------------------------------------------------------------------------------------------
def is_error(df: pd.DataFrame) -> pd.Series:
    """Rows whose turn failed (``error_kind`` set), even when a fallback or an apology covered it.

    "", "None" and "nan" are no error: a missing value can reach the table as any of those strings.
    """
    import pandas as pd

    if "error_kind" not in df.columns:
        return pd.Series(False, index=df.index)
    return is_set(df["error_kind"])


def _turn_values(rows: pd.DataFrame, col: str) -> pd.DataFrame:
    import pandas as pd

    keys = rows[list(PAIR_KEY)].copy()
    for c in ("mode", "voice"):  # text rows may hold NaN where voice rows hold '': both mean "none"
        keys[c] = keys[c].astype("object").where(keys[c].notna(), "")
    return keys.assign(value=pd.to_numeric(rows[col], errors="coerce")).dropna(subset=["value"])


def pair_turns(a: pd.DataFrame, b: pd.DataFrame, col: str) -> pd.DataFrame:
    """The same turns' ``col`` in ``a`` and in ``b`` (one strategy's rows each, from one run or two).

    One row per turn both sides hold a number for: the :data:`PAIR_KEY` columns, ``a``, ``b`` and
    ``diff`` (a - b). Turns missing on either side, or without a value there, are left out.
    """
    m = _turn_values(a, col).merge(_turn_values(b, col), on=list(PAIR_KEY), suffixes=("_a", "_b"))
    m = m.rename(columns={"value_a": "a", "value_b": "b"})
    return m.assign(diff=m["a"] - m["b"])


def item_means(rows: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    """Mean of ``cols`` per item (:data:`ITEM_KEY`): repetitions of a turn averaged into one independent value."""
    return rows.groupby(list(ITEM_KEY), dropna=False, observed=True)[list(cols)].mean()


# -- the test -----------------------------------------------------------------------------------------
class SignedRank(NamedTuple):
    """The test's p-value, and ``nonzero``: the differences that were not ties (the items it used)."""

    p: float
    nonzero: int


def wilcoxon(diffs: Any, alternative: Alternative = "two-sided") -> SignedRank:
    """Wilcoxon signed-rank test of paired differences, one per item.

    Latency differences are skewed and quality differences lumpy, so a t-test's normality fails where
    it matters; the signed-rank test needs only symmetry. Ties (``|d| <= ZERO``) carry no direction
    and are dropped (``zero_method="wilcox"``). No differences: p is NaN; only ties: p = 1.
    ``alternative="greater"`` tests "the differences lean positive".
    """
    import numpy as np
    from scipy.stats import wilcoxon as signed_rank

    d = np.asarray(diffs, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return SignedRank(math.nan, 0)
    moved = np.abs(d) > ZERO
    nonzero = int(moved.sum())
    if nonzero == 0:
        return SignedRank(1.0, 0)
    res = signed_rank(np.where(moved, d, 0.0), zero_method="wilcox", alternative=alternative)
    return SignedRank(float(res.pvalue), nonzero)


__all__ = [
    "ERROR_RATE",
    "ITEM_KEY",
    "PAIR_KEY",
    "ZERO",
    "SignedRank",
    "catalogue",
    "direction",
    "has_numbers",
    "is_error",
    "item_means",
    "label",
    "pair_turns",
    "score_columns",
    "wilcoxon",
]
