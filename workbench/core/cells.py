"""One turn-table cell as plain Python, whichever store it came from.

Parquet gives numpy arrays and ``pd.NA``, JSON gives lists and None, an older run may hold the
strings "None" or "nan" where a value was missing: every reader of the table goes through these.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

UNSET_STRINGS = ("", "None", "nan")


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def as_list(v: Any) -> list[Any]:
    """A list column's cell as a list (missing gives [], a lone string a one-item list)."""
    if _missing(v):
        return []
    if isinstance(v, str):
        return [v]
    try:
        return list(v)
    except TypeError:
        return [v]


def as_text(v: Any) -> str:
    """A text cell as a string, '' when missing."""
    return "" if _missing(v) else str(v)


def cell_is_set(v: Any) -> bool:
    """Whether a cell holds something: not missing, not '', 'None' or 'nan', not False or 0, not an empty list."""
    if _missing(v):
        return False
    if isinstance(v, str):
        return v.strip() not in UNSET_STRINGS
    try:
        return bool(v)
    except (TypeError, ValueError):  # arrays: set when non-empty
        return len(v) > 0


def is_set(values: pd.Series) -> pd.Series:
    """:func:`cell_is_set` for every cell of a column."""
    return values.astype("object").map(cell_is_set).astype(bool)


__all__ = ["UNSET_STRINGS", "as_list", "as_text", "cell_is_set", "is_set"]
