"""Eval gates: bounds on a run's turn table, and regression tests against a baseline, as typed verdicts.

A suite's ``gates:`` list holds two kinds of gate (exactly one of ``max``/``min``/``max_drop``/``max_rise``)::

    - {metric: llm_ttfc_s, stat: p90, max: 1.5, mode: text}          # a bound on a statistic
    - {metric: error_rate, max: 0.0}                                  # share of turns with an error_kind
    - {metric: fact_recall, min: 0.3, strategies: [extractive]}
    - {metric: fact_recall, max_drop: 0.05, alpha: 0.05}              # regression vs the baseline run
    - {metric: llm_ttfc_s, max_rise: "25%", against: baseline}        # vs the suite's baseline strategy

**Why a paired one-sided test with a tolerance, not two means.** A regression gate asks "did this
strategy get worse than the reference by more than the tolerance, beyond noise?". Turns differ far
more from each other than runs do, so each turn is compared with *the same turn* of the reference
(matched on conversation, turn, repetition, mode and voice, as in :mod:`workbench.analysis.compare`),
repetitions are averaged per item, and the per-item worsening minus the tolerance is tested with a
one-sided Wilcoxon signed-rank test (H0: worsening <= tolerance). The gate fails only when p < alpha:
an identical rerun (every difference zero) passes, and a gate that cannot reach p < alpha with the
items available says so as an error instead of passing silently.

Missing evidence (no rows, a column nobody scored, a voice metric in a text run, a missing baseline
strategy) is never a pass: ``status`` is ``"error"`` (or ``"skipped"`` for ``required: false`` gates
and for run regressions when no baseline run was given), with the reason in ``detail``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workbench.analysis.stats import ERROR_RATE, direction, is_error, item_means, pair_turns, wilcoxon
from workbench.core.cells import is_set
from workbench.scoring.persist import load_scored

if TYPE_CHECKING:
    import pandas as pd

Stat = Literal["mean", "median", "p50", "p90", "p95", "p99", "min", "max", "rate"]
Status = Literal["pass", "fail", "error", "skipped"]
QUANTILES = {"median": 0.5, "p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
RUN = "run"  # ``against: run``: the same strategy in the baseline run
SUITE_BASELINE = "baseline"  # ``against: baseline``: the suite's ``baseline`` strategy in the same run


class GateSpecError(ValueError):
    """A suite's gates cannot be read; the message names the gate."""


# -- the gate model -------------------------------------------------------------------------------
class Gate(BaseModel):
    """One entry of a suite's ``gates:`` list: a bound (``max``/``min``) or a regression (``max_drop``/``max_rise``).

    ``metric`` is a turn-table column (scores included) or ``error_rate`` (share of turns with an
    ``error_kind``, recovered ones included: the caller heard an apology or a fallback). ``stat: rate``
    is the share of rows where the column is set (not empty, not false, not zero).
    Tolerances are in the metric's units, or a percentage of the reference's mean (``"20%"``). A regression
    gate must go the way the metric's declared direction says: ``max_drop`` for a higher-is-better one.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    metric: str
    stat: Stat = "mean"
    max_: float | None = Field(None, alias="max")
    min_: float | None = Field(None, alias="min")
    max_drop: float | str | None = None  # regression of a higher-is-better metric (fact_recall)
    max_rise: float | str | None = None  # regression of a lower-is-better metric (latency, wer, error_rate)
    against: str = RUN  # "run", "baseline" (the suite's baseline strategy) or a strategy name
    alpha: float = Field(0.05, gt=0, lt=1)
    mode: Literal["text", "voice"] | None = None  # only rows of this mode
    voice: str | None = None  # only rows of this recording variant
    strategies: list[str] | None = None  # only these strategies (default: all in the suite)
    name: str | None = None
    required: bool = True  # False: missing evidence is "skipped", not a failure

    @field_validator("max_drop", "max_rise")
    @classmethod
    def _tolerance(cls, v: float | str | None) -> float | str | None:
        if v is None:
            return v
        if isinstance(v, str):
            m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", v)
            if not m:
                raise ValueError(f"tolerance {v!r}: a number in the metric's units, or a percentage like '20%'")
            return f"{float(m.group(1)):g}%"
        if v < 0:
            raise ValueError("a tolerance cannot be negative")
        return float(v)

    @model_validator(mode="after")
    def _one_kind(self) -> Gate:
        given = [k for k in ("max_", "min_", "max_drop", "max_rise") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of max: or min: (a bound), or one of max_drop: / max_rise: (a regression)"
            )
        if self.is_regression and "stat" in self.model_fields_set and self.stat != "mean":
            raise ValueError("stat: does not apply to a regression gate (it tests paired per-turn differences)")
        if not self.is_regression and "against" in self.model_fields_set:
            raise ValueError("against: applies to regression gates (max_drop: / max_rise:) only")
        if self.is_regression:
            self._check_direction()
        return self

    def _check_direction(self) -> None:
        """A rise of a higher-is-better metric is an improvement: gating on it would fail every better strategy."""

        better = direction(self.metric)
        wrong = "max_rise" if better == "higher" else "max_drop" if better == "lower" else None
        if wrong is not None and getattr(self, wrong) is not None:
            right, worse = ("max_drop", "drop") if better == "higher" else ("max_rise", "rise")
            raise ValueError(f"{better} is better for {self.metric}, so a regression is a {worse}: use {right}:")

    # -- derived ----------------------------------------------------------------------------
    @property
    def is_regression(self) -> bool:
        return self.max_drop is not None or self.max_rise is not None

    @property
    def kind(self) -> Literal["bound", "regression"]:
        return "regression" if self.is_regression else "bound"

    @property
    def op(self) -> Literal["<=", ">="]:
        return ">=" if self.min_ is not None else "<="

    @property
    def bound(self) -> float:
        """The bound (bounds) or the absolute tolerance (regressions; NaN when relative)."""
        v = next(x for x in (self.max_, self.min_, self.max_drop, self.max_rise) if x is not None)
        return math.nan if isinstance(v, str) else float(v)

    @property
    def tolerance_text(self) -> str:
        v = self.max_drop if self.max_drop is not None else self.max_rise
        return v if isinstance(v, str) else f"{v:g}"

    def tolerance_for(self, reference_mean: float) -> float:
        v = self.max_drop if self.max_drop is not None else self.max_rise
        if isinstance(v, str):
            return float(v.rstrip("%")) / 100 * abs(reference_mean)
        return float(v)  # type: ignore[arg-type]

    def reference(self, suite_baseline: str) -> str:
        """The strategy a within-run regression compares with (``against: run`` compares runs instead)."""
        return suite_baseline if self.against == SUITE_BASELINE else self.against

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        scope = "".join(f" ({x})" for x in (self.mode, self.voice) if x)
        if self.is_regression:
            what = "drop" if self.max_drop is not None else "rise"
            ref = {RUN: "baseline run", SUITE_BASELINE: "baseline strategy"}.get(self.against, self.against)
            return f"{self.metric} {what} <= {self.tolerance_text} vs {ref}{scope}"
        what = self.metric if self.metric == ERROR_RATE else f"{self.stat} {self.metric}"
        return what + scope


def parse_gates(gates: Sequence[Mapping[str, Any] | Gate] | None) -> list[Gate]:
    """Validate a suite's ``gates:`` list; the first problem is a :class:`GateSpecError` naming the gate."""
    out = []
    for i, g in enumerate(gates or []):
        if isinstance(g, Gate):
            out.append(g)
            continue
        if not isinstance(g, Mapping):
            raise GateSpecError(f"gate #{i + 1} {g!r}: expected a mapping like {{metric: llm_ttfc_s, max: 1.5}}")
        try:
            out.append(Gate.model_validate(dict(g)))
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "gate"
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise GateSpecError(f"gate #{i + 1} {dict(g)}: {where}: {msg}") from e
    return out


# -- results ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateResult:
    """One gate checked for one strategy. ``value is None`` means the run holds no evidence for it.

    Bounds: ``value`` is the statistic, ``bound`` the limit. Regressions: ``value`` is the mean
    per-item worsening (drop or rise; negative is an improvement), ``bound`` the absolute tolerance,
    ``p_value`` the one-sided test's p.
    """

    name: str
    strategy: str
    passed: bool
    value: float | None
    bound: float
    detail: str = ""
    op: Literal["<=", ">="] = "<="
    n: int = 0  # rows (bounds) or paired items (regressions) the value was computed from
    status: Status | None = None  # None: derived from passed/value
    kind: Literal["bound", "regression"] = "bound"
    metric: str = ""
    gate_index: int = -1  # position in the suite's gates list (pytest items are keyed on it)
    reference: str | None = None  # regressions: what the strategy was compared with
    reference_value: float | None = None  # regressions: the reference's mean over the paired turns
    strategy_value: float | None = None  # regressions: the strategy's mean over the paired turns
    p_value: float | None = None
    alpha: float | None = None
    required: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.status is None:
            object.__setattr__(self, "status", "pass" if self.passed else ("error" if self.value is None else "fail"))

    @property
    def missing(self) -> bool:
        return self.value is None

    @property
    def failed(self) -> bool:
        """Counts against the suite: a broken bound, a regression, or missing evidence for a required gate."""
        return self.status in ("fail", "error")

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        for k in ("value", "bound", "reference_value", "strategy_value", "p_value"):
            v = d.get(k)
            d[k] = None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 6)
        return d


def _no_evidence(base: dict[str, Any], gate: Gate, why: str) -> GateResult:
    status: Status = "error" if gate.required else "skipped"
    return GateResult(**base, passed=False, value=None, status=status, detail=f"no evidence: {why}")


# -- row selection and statistics ---------------------------------------------------------------------
def statistic(values: Any, stat: str) -> float:
    """``stat`` of ``values`` (quantiles interpolate linearly, as numpy and pandas do by default)."""
    import numpy as np

    arr = np.asarray(values, dtype=float)
    if stat in QUANTILES:
        return float(np.quantile(arr, QUANTILES[stat]))
    if stat == "rate":
        return float(np.mean(arr != 0))
    return float({"mean": np.mean, "min": np.min, "max": np.max}[stat](arr))


def select_rows(df: pd.DataFrame, strategy: str, gate: Gate) -> pd.DataFrame:
    rows = df[df["strategy"] == strategy] if "strategy" in df.columns else df.iloc[0:0]
    if gate.mode:
        rows = rows[rows["mode"] == gate.mode] if "mode" in rows.columns else rows.iloc[0:0]
    if gate.voice:
        rows = rows[rows["voice"] == gate.voice] if "voice" in rows.columns else rows.iloc[0:0]
    return rows


def _scope(strategy: str, gate: Gate) -> str:
    return (
        f"strategy {strategy!r}"
        + (f" in {gate.mode} mode" if gate.mode else "")
        + (f" with voice {gate.voice!r}" if gate.voice else "")
    )


def metric_values(rows: pd.DataFrame, gate: Gate, scope: str = "") -> tuple[pd.Series | None, str | None]:
    """The gate's numbers on ``rows`` (index kept), or None and why there are none."""
    import pandas as pd

    if gate.metric == ERROR_RATE:
        return is_error(rows).astype(float), None
    if gate.metric not in rows.columns:
        return None, f"column {gate.metric!r} is not in the run (not scored yet, or its scorer needs a judge?)"
    if gate.stat == "rate" and not gate.is_regression:
        return is_set(rows[gate.metric]).astype(float), None
    values = pd.to_numeric(rows[gate.metric], errors="coerce").dropna()
    if values.empty:
        return None, (
            f"{gate.metric!r} is empty on all {len(rows)} rows"
            + (f" of {scope}" if scope else "")
            + " (a voice metric in a text run, audio not paced in real time, or no facts/reference to score?)"
        )
    return values.astype(float), None


# -- bounds --------------------------------------------------------------------------------------------
def check_gate(df: pd.DataFrame, strategy: str, gate: Gate, index: int = -1) -> GateResult:
    """One bound on one strategy's rows; missing evidence is a failed result with ``value=None``."""
    base: dict[str, Any] = {
        "name": gate.label,
        "strategy": strategy,
        "bound": gate.bound,
        "op": gate.op,
        "metric": gate.metric,
        "gate_index": index,
        "required": gate.required,
    }
    rows = select_rows(df, strategy, gate)
    scope = _scope(strategy, gate)
    if rows.empty:
        return _no_evidence(base, gate, f"the run has no rows for {scope}")
    values, why = metric_values(rows, gate, scope)
    if values is None:
        return _no_evidence(base, gate, str(why))
    value = statistic(values, "mean" if gate.metric == ERROR_RATE else gate.stat)
    passed = value <= gate.bound if gate.op == "<=" else value >= gate.bound
    detail = f"{value:.4g} {gate.op if passed else ('>' if gate.op == '<=' else '<')} {gate.bound:g}"
    return GateResult(**base, passed=passed, value=value, detail=detail, n=len(values))


# -- regressions ---------------------------------------------------------------------------------------
def paired_worsening(
    current: pd.DataFrame, reference: pd.DataFrame, gate: Gate
) -> tuple[pd.DataFrame | None, str | None]:
    """Per paired turn: the strategy's value, the reference's, and the worsening (drop or rise).

    Pairs are matched as :func:`workbench.analysis.stats.pair_turns` does; the columns are ``value``,
    ``value_ref`` and ``worsening``.
    """
    cur_vals, why = metric_values(current, gate, "the strategy")
    if cur_vals is None:
        return None, str(why)
    ref_vals, why = metric_values(reference, gate, "the reference")
    if ref_vals is None:
        return None, f"reference: {why}"
    col = gate.metric
    m = pair_turns(current.assign(**{col: cur_vals}), reference.assign(**{col: ref_vals}), col)
    if m.empty:
        return None, (
            "no turn of the strategy has a matching turn (conversation, turn, repetition, mode, voice) in the reference"
        )
    sign = -1.0 if gate.max_drop is not None else 1.0  # worsening: a drop for max_drop, a rise for max_rise
    m = m.rename(columns={"a": "value", "b": "value_ref"})
    return m.assign(worsening=sign * m["diff"]), None


def min_attainable_p(n_items: int) -> float:
    """The smallest one-sided p the signed-rank test can give with ``n_items`` items (all in one direction)."""
    return 0.5**n_items if n_items > 0 else 1.0


def check_regression(
    current: pd.DataFrame,
    reference: pd.DataFrame | None,
    strategy: str,
    gate: Gate,
    *,
    reference_strategy: str | None = None,
    reference_name: str = "baseline run",
    index: int = -1,
) -> GateResult:
    """A regression gate on one strategy: paired worsening vs the reference, one-sided test with a tolerance."""
    import numpy as np

    ref_strategy = reference_strategy or strategy
    base: dict[str, Any] = {
        "name": gate.label,
        "strategy": strategy,
        "bound": gate.bound,
        "op": "<=",
        "kind": "regression",
        "metric": gate.metric,
        "gate_index": index,
        "reference": reference_name,
        "alpha": gate.alpha,
        "required": gate.required,
    }
    if reference is None:
        return GateResult(
            **base,
            passed=False,
            value=None,
            status="skipped",
            detail="no baseline run to compare with (workbench eval --baseline RUN)",
        )
    cur_rows = select_rows(current, strategy, gate)
    if cur_rows.empty:
        return _no_evidence(base, gate, f"the run has no rows for {_scope(strategy, gate)}")
    ref_rows = select_rows(reference, ref_strategy, gate)
    if ref_rows.empty:
        return _no_evidence(base, gate, f"the {reference_name} has no rows for {_scope(ref_strategy, gate)}")
    pairs, why = paired_worsening(cur_rows, ref_rows, gate)
    if pairs is None:
        return _no_evidence(base, gate, str(why))
    per_item = item_means(pairs, ["worsening", "value", "value_ref"])
    ref_mean = float(per_item["value_ref"].mean())
    tol = gate.tolerance_for(ref_mean)
    worse = float(per_item["worsening"].mean())
    n_items = len(per_item)
    p, used = wilcoxon(per_item["worsening"].to_numpy(dtype=float) - tol, "greater")
    stats = {
        "bound": tol,
        "n": n_items,
        "reference_value": ref_mean,
        "strategy_value": float(per_item["value"].mean()),
        "p_value": p,
        "extra": {"pairs": len(pairs), "nonzero_items": used},
    }
    base.update(stats)
    what = "drop" if gate.max_drop is not None else "rise"
    means = f"{ref_mean:.4g} -> {stats['strategy_value']:.4g}"
    if used > 0 and min_attainable_p(used) >= gate.alpha and np.mean(per_item["worsening"] - tol > 0) > 0.5:
        # the data lean towards a regression but the test cannot reach alpha: that is not evidence of "no regression"
        detail = (
            f"cannot decide: mean {what} {worse:.4g} over {n_items} items ({means}) leans past the tolerance "
            f"{tol:.4g}, but {used} differing items cannot reach p < {gate.alpha:g} "
            f"(smallest possible p {min_attainable_p(used):.3g}); add conversations"
        )
        status: Status = "error" if gate.required else "skipped"
        return GateResult(**{**base, "value": worse}, passed=False, status=status, detail=detail)
    passed = not (p < gate.alpha)
    verdict = f"p={p:.3g} {'>=' if passed else '<'} {gate.alpha:g}"
    detail = (
        f"mean {what} {worse:.4g} ({means}) over {n_items} paired items, tolerance {tol:.4g}: "
        f"one-sided Wilcoxon {verdict}" + ("" if passed else " -> regression")
    )
    return GateResult(**base, passed=passed, value=worse, detail=detail)


# -- the whole suite --------------------------------------------------------------------------------------
def _suite_get(suite: Any, key: str, default: Any = None) -> Any:
    if isinstance(suite, Mapping):
        return suite.get(key, default)
    return getattr(suite, key, default)


def expand(
    gates: Sequence[Gate], strategies: Sequence[str], suite_baseline: str = "plain"
) -> list[tuple[int, Gate, str]]:
    """Every (gate index, gate, strategy) pair a suite checks: one verdict, one pytest item each.

    A gate applies to its own ``strategies`` or to all of the suite's; a within-run regression
    is not checked for its own reference strategy.
    """
    out = []
    for i, gate in enumerate(gates):
        for s in gate.strategies or strategies:
            if gate.is_regression and gate.against != RUN and s == gate.reference(suite_baseline):
                continue
            out.append((i, gate, s))
    return out


def suite_strategies(suite: Any, run_df: pd.DataFrame | None = None) -> list[str]:
    names = list((_suite_get(suite, "strategies") or {}).keys())
    if names or run_df is None or "strategy" not in run_df.columns:
        return names
    return sorted(set(run_df["strategy"].dropna().astype(str)))


def _load_baseline(baseline: Any, manifest: Mapping[str, Any]) -> tuple[pd.DataFrame | None, str, str | None]:
    """(rows, name, problem) of the baseline run: a DataFrame, a run id/folder, or the one the manifest records."""
    import pandas as pd

    if isinstance(baseline, pd.DataFrame):
        return baseline, "baseline run", None
    ref = baseline if baseline is not None else (manifest.get("eval") or {}).get("baseline_run")
    if ref is None:
        return None, "baseline run", None

    try:
        scored = load_scored(Path(ref))
    except FileNotFoundError as e:
        return None, f"baseline run {Path(ref).name}", f"baseline run not found: {e}"
    return scored.rows, f"baseline run {scored.run_id}", None


def evaluate_gates(
    run_df: pd.DataFrame,
    manifest: Mapping[str, Any],
    suite: Mapping[str, Any] | Any,
    *,
    baseline: pd.DataFrame | str | Path | None = None,
) -> list[GateResult]:
    """Every gate of ``suite`` for every strategy of the run (or the gate's own list), in suite order.

    ``suite``: a mapping (a suite YAML or a manifest's ``suite``) or a :class:`~workbench.workflows.suite.Suite`.
    ``baseline``: the baseline run's scored rows, or its id/folder; default: the run the manifest's
    ``eval.baseline_run`` names (written by ``workbench eval --baseline``), else run regressions are skipped.
    """
    gates = parse_gates(_suite_get(suite, "gates") or [])
    names = suite_strategies(suite, run_df)
    suite_baseline = str(_suite_get(suite, "baseline") or "plain")
    needs_run = any(g.is_regression and g.against == RUN for g in gates)
    base_df, base_name, base_problem = _load_baseline(baseline, manifest) if needs_run else (None, "", None)
    results = []
    for i, gate, strategy in expand(gates, names, suite_baseline):
        if not gate.is_regression:
            results.append(check_gate(run_df, strategy, gate, i))
        elif gate.against == RUN:
            if base_problem:
                base = {
                    "name": gate.label,
                    "strategy": strategy,
                    "bound": gate.bound,
                    "kind": "regression",
                    "metric": gate.metric,
                    "gate_index": i,
                    "reference": base_name,
                    "required": gate.required,
                }
                results.append(_no_evidence(base, gate, base_problem))
            else:
                results.append(check_regression(run_df, base_df, strategy, gate, reference_name=base_name, index=i))
        else:
            ref = gate.reference(suite_baseline)
            results.append(
                check_regression(
                    run_df, run_df, strategy, gate, reference_strategy=ref, reference_name=f"strategy {ref!r}", index=i
                )
            )
    return results


__all__ = [
    "ERROR_RATE",
    "Gate",
    "GateResult",
    "GateSpecError",
    "check_gate",
    "check_regression",
    "evaluate_gates",
    "expand",
    "paired_worsening",
    "parse_gates",
    "select_rows",
    "statistic",
]
