"""The scorer registry: ``@scorer("name")`` classes that turn the turn table into new columns.

Like Inspect AI's scorers, each scorer is registered by name and has one obvious method,
``score(df, ctx) -> DataFrame`` (same index, its declared columns), and declares each column's
:class:`~workbench.core.metrics.Metric` (which way is better), so analysis compares it like a
built-in one. :func:`score_run` runs the
chosen ones and records, per scorer, whether it ran and, when it did not, *why* (no judge
configured, no dataset to read reference documents from, an exception): a missing column always
has a recorded reason, and a present one is never a placeholder.
"""

from __future__ import annotations

import importlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from workbench.core.aio import run_sync as run_sync  # re-exported: scorers import their helpers from here
from workbench.core.cells import as_list as as_list
from workbench.core.cells import as_text as as_text
from workbench.core.metrics import Metric, declare
from workbench.models import ModelStack

if TYPE_CHECKING:
    from workbench.models import ModelStack
    from workbench.scoring.judge import JudgeLLM

log = logging.getLogger(__name__)


class ScoreContext:
    """What scorers may need beyond the rows: the dataset folder, the model stack (MiniLM), a judge.

    The stack is created on first use (only the embedder scorer needs it) and closed by
    :func:`score_run` when it created it.
    """

    def __init__(
        self,
        *,
        dataset: str | Path | None = None,
        stack: ModelStack | None = None,
        judge: JudgeLLM | None = None,
    ) -> None:
        self.dataset = Path(dataset) if dataset is not None else None
        self.judge = judge
        self._stack = stack
        self._own_stack = False
        self._docs: dict[str, str | None] = {}

    @property
    def stack(self) -> ModelStack:
        if self._stack is None:
            self._stack, self._own_stack = ModelStack(), True
        return self._stack

    def embedder(self) -> Any:
        return self.stack.embedder()

    def document_text(self, rel_path: str) -> str | None:
        """A reference document's text (path relative to the dataset); None when it cannot be read."""
        if self.dataset is None:
            return None
        if rel_path not in self._docs:
            p = self.dataset / rel_path
            try:
                self._docs[rel_path] = p.read_text(encoding="utf-8")
            except OSError:
                log.warning("reference document %s not found under %s", rel_path, self.dataset)
                self._docs[rel_path] = None
        return self._docs[rel_path]

    def close(self) -> None:
        if self._own_stack and self._stack is not None:
            self._stack.close()
            self._stack, self._own_stack = None, False


class Scorer(ABC):
    """One family of per-turn scores. Subclasses declare ``metrics`` and implement :meth:`score`."""

    name: ClassVar[str] = ""
    metrics: ClassVar[tuple[Metric, ...]] = ()
    """The columns this scorer adds, with label and which way is better; declared in the catalogue on registration."""
    columns: ClassVar[tuple[str, ...]] = ()
    """Derived from ``metrics`` on registration. A class may list it instead, to add a column whose metric is
    declared elsewhere (``wer`` is the turn table's) or, written before metrics existed, none at all."""
    needs_judge: ClassVar[bool] = False
    description: ClassVar[str] = ""

    failed_columns: set[str]
    """Set by a scorer when some rows of a column failed (vs. were not applicable): all-NaN columns are dropped
    and the record says which of the two it was."""

    def unavailable(self, df: pd.DataFrame, ctx: ScoreContext) -> str | None:
        """Why this scorer cannot run here (None: it can). The reason is stored with the scores."""
        if self.needs_judge and ctx.judge is None:
            return "no judge endpoint configured (score with --judge-endpoint NAME to add these columns)"
        return None

    @abstractmethod
    def score(self, df: pd.DataFrame, ctx: ScoreContext) -> pd.DataFrame:
        """New columns for ``df``'s rows: a DataFrame with ``df.index`` and (a subset of) ``columns``."""


SCORERS: dict[str, type[Scorer]] = {}


def _columns(cls: type[Scorer]) -> tuple[str, ...]:
    """The scorer's columns: its metrics' names, unless the class lists columns itself (then they must cover them)."""
    named = tuple(m.name for m in cls.metrics)
    if named and "columns" not in vars(cls):
        return named
    stray = [n for n in named if n not in cls.columns]
    if stray:
        raise ValueError(f"scorer {cls.__qualname__}: metrics {stray} are not among its columns {cls.columns}")
    return cls.columns


def scorer(name: str) -> Callable[[type[Scorer]], type[Scorer]]:
    """Register a :class:`Scorer` subclass under ``name`` (the name used by ``workbench score --scorers``).

    A class redefined in place (same module and qualified name: a re-run notebook cell, a reloaded module)
    replaces its earlier version and re-declares its metrics; another class claiming a taken name is an error.
    """

    def deco(cls: type[Scorer]) -> type[Scorer]:
        old = SCORERS.get(name)
        if old is not None and old is not cls and _origin(old) != _origin(cls):
            raise ValueError(f"scorer {name!r} is already registered by {old.__qualname__}")
        cls.columns = _columns(cls)
        cls.name = name
        declare(*cls.metrics)
        SCORERS[name] = cls
        return cls

    return deco


def _origin(cls: type) -> tuple[str, str]:
    return cls.__module__, cls.__qualname__


def _load_builtins() -> None:
    """Importing a scorer module registers its scorers: the offline ones first, as they always run."""
    for module in ("offline", "tools", "judge", "faults"):
        importlib.import_module(f"workbench.scoring.{module}")


def available_scorers() -> dict[str, type[Scorer]]:
    _load_builtins()
    return dict(SCORERS)


@dataclass
class ScorerOutcome:
    """What happened to one scorer: ``ok`` (columns added), ``skipped`` or ``failed`` (with the reason)."""

    name: str
    status: str
    columns: list[str] = field(default_factory=list)
    reason: str | None = None
    seconds: float = 0.0


@dataclass
class ScoreReport:
    outcomes: list[ScorerOutcome] = field(default_factory=list)
    judge: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"scorers": [asdict(o) for o in self.outcomes], "judge": self.judge}

    @property
    def missing(self) -> dict[str, str]:
        """Scorer name -> why its columns are absent."""
        return {o.name: o.reason or o.status for o in self.outcomes if o.status != "ok"}


def _resolve_names(names: Iterable[str] | None) -> list[str]:
    registry = available_scorers()
    if names is None:
        return list(registry)
    chosen = [n.strip() for n in names if n and n.strip()]
    unknown = [n for n in chosen if n not in registry]
    if unknown:
        raise KeyError(f"unknown scorer(s) {', '.join(unknown)}; available: {', '.join(registry)}")
    return chosen


def score_run(
    df: pd.DataFrame,
    names: Iterable[str] | None = None,
    judge: JudgeLLM | str | None = None,
    *,
    dataset: str | Path | None = None,
    stack: ModelStack | None = None,
) -> pd.DataFrame:
    """The rows with score columns added (existing ones of the same name replaced).

    ``names``: scorers to run (default: all registered). ``judge``: a :class:`JudgeLLM` or the name
    of an endpoint in the workbench config; without one the judge scorers are skipped. ``dataset``:
    the dataset folder, for scorers that read the reference documents. What ran, and why anything
    did not, is in ``result.attrs["scoring"]`` (a :class:`ScoreReport` as a dict).
    """
    chosen = _resolve_names(names)
    own_judge = isinstance(judge, str)
    if isinstance(judge, str):
        from workbench.scoring.judge import JudgeLLM  # judge.py's scorers register here: it imports this module

        judge = JudgeLLM.from_endpoint(judge, stack=stack)
    ctx = ScoreContext(dataset=dataset, stack=stack, judge=judge)
    out = df.copy()
    report = ScoreReport()
    try:
        for name in chosen:
            sc = SCORERS[name]()
            t0 = time.perf_counter()
            reason = sc.unavailable(out, ctx)
            if reason is not None:
                report.outcomes.append(ScorerOutcome(name, "skipped", reason=reason))
                continue
            try:
                cols = sc.score(out, ctx)
            except Exception as e:  # one broken scorer must not lose the others' columns
                log.exception("scorer %s failed", name)
                report.outcomes.append(
                    ScorerOutcome(name, "failed", reason=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t0)
                )
                continue
            extra = [c for c in cols.columns if c not in sc.columns]
            if extra:
                raise RuntimeError(f"scorer {name} returned undeclared columns {extra}")
            note = getattr(sc, "note", None)
            empty = [c for c in cols.columns if cols[c].isna().all()]
            if empty:  # an all-NaN column is a placeholder: leave it out and say why
                cols = cols.drop(columns=empty)
                failed = set(getattr(sc, "failed_columns", ()))
                whys = [
                    f"{c} absent: {'every row it applies to failed' if c in failed else 'no row it applies to'}"
                    for c in empty
                ]
                note = "; ".join([*whys, *([note] if note else [])])
            if cols.columns.empty:
                status = "failed" if set(getattr(sc, "failed_columns", ())) else "skipped"
                report.outcomes.append(ScorerOutcome(name, status, reason=note, seconds=time.perf_counter() - t0))
                continue
            for c in cols.columns:
                out[c] = cols[c].reindex(out.index)
            report.outcomes.append(
                ScorerOutcome(
                    name,
                    "ok",
                    columns=list(cols.columns),
                    reason=note,  # a partial result says what is missing and why
                    seconds=round(time.perf_counter() - t0, 3),
                )
            )
        if judge is not None:
            report.judge = judge.describe()
    finally:
        ctx.close()
        if own_judge and judge is not None:
            judge.close()
    out.attrs["scoring"] = report.to_dict()
    return out
