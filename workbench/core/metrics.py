"""The metric catalogue: what a column measures, in which unit, and which way is better.

A column's metric is declared where the column is made (the turn-table schema, a scorer class), so
analysis reads direction and label here instead of keeping lists of its own, and a user's scorer
is compared, reported and judged the right way round like a built-in one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Direction = Literal["higher", "lower"]
DIRECTIONS: tuple[Direction, ...] = ("higher", "lower")


@dataclass(frozen=True)
class Metric:
    """One column's meaning. ``direction`` says which way is better, or None when neither is (a list of the
    facts missed, the length of the agent's reply): such a column gets no better/worse verdict."""

    name: str
    label: str
    unit: str
    direction: Direction | None
    meaning: str = ""
    headline: bool = False  # shown in the one-screen run summary (keep it to a few, or the table wraps)

    def __post_init__(self) -> None:
        if self.direction is not None and self.direction not in DIRECTIONS:
            # a typo must not quietly turn into "higher is better"
            raise ValueError(f"metric {self.name!r}: direction {self.direction!r} is not 'higher', 'lower' or None")


class MetricCatalogue:
    """Metrics by column name. Declaring a name again replaces it: a re-run notebook cell updates its metric."""

    def __init__(self) -> None:
        self._by_name: dict[str, Metric] = {}

    def declare(self, *metrics: Metric) -> None:
        for m in metrics:
            if not isinstance(m, Metric):
                raise TypeError(f"declare() takes Metric objects, not {type(m).__name__}")
            self._by_name[m.name] = m

    def metric(self, name: str) -> Metric | None:
        return self._by_name.get(name)

    def label(self, name: str) -> str:
        """The metric's label, or the column name for a column nobody declared."""
        m = self._by_name.get(name)
        return m.label if m is not None and m.label else name

    def discard(self, name: str) -> None:
        self._by_name.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Metric]:
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)


METRICS = MetricCatalogue()
declare = METRICS.declare
metric = METRICS.metric

__all__ = ["DIRECTIONS", "METRICS", "Direction", "Metric", "MetricCatalogue", "declare", "metric"]
