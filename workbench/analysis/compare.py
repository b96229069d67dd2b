"""Compare strategies in a turn table: latency percentiles, quality with intervals, paired tests, pass rates.

Statistics, and why:

- **Unit of resampling and testing is the item** (conversation, turn, mode, voice), not the row.
  Repetitions of one turn are not independent (same prompt, same difficulty), so treating them as
  separate samples would make intervals too narrow and p-values too small. Bootstrap intervals
  resample items (a cluster bootstrap); paired differences are matched on the full key
  (conversation, turn, repetition, mode, voice) and then averaged over repetitions per item.
- **Wilcoxon signed-rank** on the per-item differences (:func:`workbench.analysis.stats.wilcoxon`,
  two-sided). Latency differences are skewed and heavy-tailed, quality differences are bounded
  and lumpy (fact recall moves in steps of 1/2, 1/3), so the paired t-test's normality assumption
  fails exactly where we need it; Wilcoxon needs only symmetry of the differences. Ties carry no
  direction and are dropped; if all are ties, p = 1.
- **Holm** correction across the strategies compared with the baseline, per metric, so adding
  strategies does not manufacture "significant" wins.
- Percentile intervals from ``n_boot`` resamples with a fixed ``seed``: reruns give the same table.
- **Which metrics, which way.** Quality columns are every registered scorer's numeric column in the
  run (a user's ``@scorer`` included); whether a rise is "better" or "worse" is the column's
  declared direction in the metric catalogue (:mod:`workbench.core.metrics`).
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from workbench.analysis.stats import (
    ITEM_KEY,
    direction,
    is_error,
    item_means,
    pair_turns,
    score_columns,
    wilcoxon,
)
from workbench.core.cells import as_list, as_text
from workbench.scoring.facts import fact_recall

LATENCY_COLUMNS = ("llm_ttfc_s", "llm_total_s", "v2v_s", "heard_v2v_s")
"""The latencies compare gives percentiles for (the end-to-end ones, and voice-to-voice as the call recording has
it; stage times are in the plots)."""
PERCENTILES = (50, 90, 95)


@dataclass(frozen=True)
class Objective:
    """How the leaderboard ranks: best mean ``quality`` among strategies whose ``latency`` pNN is within budget.

    ``latency`` falls back to ``llm_ttfc_s`` when the run has no voice-to-voice figures (text-only runs).
    Written on the command line as ``QUALITY[@LATENCY[:pNN]][<=BUDGET]``, e.g. ``fact_recall@v2v_s:p90<=1.5``.
    """

    quality: str = "fact_recall"
    latency: str = "v2v_s"
    percentile: float = 90
    budget_s: float | None = None
    mode: str | None = None  # rank on one mode's rows only ('text' / 'voice'); None: all rows

    @classmethod
    def parse(cls, spec: str) -> Objective:
        m = re.fullmatch(r"\s*(\w+)\s*(?:@\s*(\w+)\s*(?::\s*p(\d+(?:\.\d+)?))?)?\s*(?:<=\s*([\d.]+)\s*s?)?\s*", spec)
        if not m:
            raise ValueError(
                f"objective {spec!r}: expected QUALITY[@LATENCY[:pNN]][<=BUDGET], e.g. fact_recall@v2v_s:p90<=1.5"
            )
        q, lat, pct, budget = m.groups()
        return cls(
            quality=q,
            latency=lat or cls.latency,
            percentile=float(pct) if pct else cls.percentile,
            budget_s=float(budget) if budget else None,
        )

    @property
    def lower_is_better(self) -> bool:
        """The quality metric's declared direction: a lower-is-better one (an error rate) ranks lowest first."""
        return direction(self.quality) == "lower"

    def describe(self) -> str:
        within = f" with p{self.percentile:g} {self.latency} <= {self.budget_s:g} s" if self.budget_s else ""
        best = "lowest" if self.lower_is_better else "highest"
        return f"{best} mean {self.quality}{within}; ties by lower p{self.percentile:g} {self.latency}"


@dataclass
class Comparison:
    """All comparison tables (DataFrames) and the notes that qualify them."""

    baseline: str | None
    objective: Objective
    latency: pd.DataFrame
    quality: pd.DataFrame
    paired: pd.DataFrame
    pass_rate: pd.DataFrame
    leaderboard: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        return {
            "leaderboard": self.leaderboard,
            "latency": self.latency,
            "quality": self.quality,
            "paired": self.paired,
            "pass_rate": self.pass_rate,
        }

    def summary(self) -> str:
        lines = [f"objective: {self.objective.describe()}"]
        for _, r in self.leaderboard.iterrows():
            lines.append(
                f"{int(r['rank'])}. {r['strategy']}: {self.objective.quality} {r['quality']:.3f} "
                f"[{r['quality_ci_low']:.3f}, {r['quality_ci_high']:.3f}], "
                f"p{self.objective.percentile:g} {r['latency_metric']} {_fmt_s(r['latency'])}, "
                f"pass rate {r['pass_rate']:.0%}" + ("" if r["within_budget"] else " (over budget)")
            )
        return "\n".join(lines + self.notes)


def _fmt_s(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f} s"


# -- building blocks -------------------------------------------------------------------------------


def bootstrap_mean_ci(
    values: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one value per independent item)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return (math.nan, math.nan)
    if len(v) == 1 or np.all(v == v[0]):
        return (float(v[0]), float(v[0])) if len(v) else (math.nan, math.nan)
    idx = rng.integers(0, len(v), size=(n_boot, len(v)))
    means = v[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN)."""
    p = np.asarray(pvalues, dtype=float)
    ok = ~np.isnan(p)
    out = np.full(len(p), np.nan)
    if ok.any():
        vals = p[ok]
        order = np.argsort(vals)
        m = len(vals)
        adj = np.maximum.accumulate((m - np.arange(m)) * vals[order])
        res = np.empty(m)
        res[order] = np.minimum(adj, 1.0)
        out[ok] = res
    return out.tolist()


def ensure_fact_recall(df: pd.DataFrame) -> pd.DataFrame:
    """``fact_recall`` computed on the fly for an unscored run (pass rate needs it)."""
    if "fact_recall" in df.columns:
        return df

    out = df.copy()
    out["fact_recall"] = [
        fact_recall([str(f) for f in as_list(fs)], as_text(a)) for fs, a in zip(df["facts"], df["answer"], strict=True)
    ]
    return out


def passed(df: pd.DataFrame, threshold: float = 1.0) -> pd.Series:
    """A turn passes when it has no error and states at least ``threshold`` of its facts.

    A turn without must-mention facts passes when it has no error (there is nothing to miss).
    """
    recall = df["fact_recall"].astype(float)
    return (~is_error(df) & (recall.isna() | (recall >= threshold - 1e-9))).astype(bool)


def _latency_metric(df: pd.DataFrame, wanted: str) -> str:
    if wanted in df.columns and df[wanted].notna().any():
        return wanted
    return "llm_ttfc_s"


def _rng(seed: int, *key: Any) -> np.random.Generator:
    """A generator per table cell: identical data gives identical intervals, whatever else is in the run."""
    return np.random.default_rng([seed, zlib.crc32(repr(key).encode())])


def _item_means(d: pd.DataFrame, col: str) -> np.ndarray:
    return item_means(d, [col])[col].to_numpy(dtype=float)


# -- the comparison --------------------------------------------------------------------------------


def compare(
    df: pd.DataFrame,
    baseline: str | None = "plain",
    objective: Objective | str | dict[str, Any] | None = None,
    *,
    pass_threshold: float = 1.0,
    alpha: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
    quality_columns: tuple[str, ...] | None = None,
) -> Comparison:
    """Compare every strategy in ``df`` (a scored turn table) with ``baseline`` and rank them by ``objective``.

    ``quality_columns``: the metrics to compare (default: every registered scorer's numeric column in ``df``).
    """
    if isinstance(objective, str):
        objective = Objective.parse(objective)
    elif isinstance(objective, dict):
        objective = Objective(**objective)
    objective = objective or Objective()
    if df.empty:
        raise ValueError("the run has no rows to compare")
    notes: list[str] = []
    df = ensure_fact_recall(df).copy()
    for c in ("voice", "mode"):
        df[c] = df[c].astype("object").where(df[c].notna(), "")
    strategies = list(dict.fromkeys(df["strategy"].astype(str)))
    if baseline is not None and baseline not in strategies:
        notes.append(f"baseline {baseline!r} is not in this run ({', '.join(strategies)}): no paired comparison")
        baseline = None
    qcols = [c for c in (quality_columns or score_columns(df)) if c in df.columns and df[c].notna().any()]
    if objective.quality not in df.columns:
        raise KeyError(f"objective quality column {objective.quality!r} is not in the run; have: {', '.join(qcols)}")
    qcols = [objective.quality, *(c for c in qcols if c != objective.quality)]  # the ranked metric first
    lat_cols = [c for c in LATENCY_COLUMNS if c in df.columns and df[c].notna().any()]

    # latency percentiles per strategy and mode
    lat_rows = []
    for (s, mode), g in df.groupby(["strategy", "mode"], sort=False, observed=True):
        row: dict[str, Any] = {"strategy": s, "mode": mode, "turns": len(g)}
        for c in lat_cols:
            v = g[c].dropna().to_numpy(dtype=float)
            row[f"{c}_n"] = len(v)
            for p in PERCENTILES:
                row[f"{c}_p{p}"] = float(np.percentile(v, p)) if len(v) else math.nan
        lat_rows.append(row)
    latency = pd.DataFrame(lat_rows)

    # quality means with item-bootstrap intervals
    modes = list(dict.fromkeys(df["mode"]))
    groups: list[tuple[str, str, pd.DataFrame]] = [
        (str(s), str(m), g) for (s, m), g in df.groupby(["strategy", "mode"], sort=False, observed=True)
    ]
    if len(modes) > 1:
        groups += [(str(s), "all", g) for s, g in df.groupby("strategy", sort=False, observed=True)]
    q_rows = []
    for s, mode, g in groups:
        for c in qcols:
            vals = g[c].astype(float)
            item = _item_means(g.assign(**{c: vals}), c)
            item = item[~np.isnan(item)]
            lo, hi = bootstrap_mean_ci(item, n_boot=n_boot, rng=_rng(seed, "quality", mode, c))
            q_rows.append(
                {
                    "strategy": s,
                    "mode": mode,
                    "metric": c,
                    "mean": float(vals.mean()) if vals.notna().any() else math.nan,
                    "ci_low": lo,
                    "ci_high": hi,
                    "n": int(vals.notna().sum()),
                    "items": len(item),
                }
            )
    quality = pd.DataFrame(q_rows)

    # paired differences vs the baseline
    p_rows = []
    if baseline is not None:
        base = df[df["strategy"] == baseline]
        for s in strategies:
            if s == baseline:
                continue
            other = df[df["strategy"] == s]
            for c in [*qcols, *lat_cols]:
                m = pair_turns(other, base, c)
                if m.empty:
                    continue
                per_item = item_means(m, ["diff"])["diff"].to_numpy(dtype=float)
                lo, hi = bootstrap_mean_ci(per_item, n_boot=n_boot, rng=_rng(seed, "paired", c))
                p_rows.append(
                    {
                        "strategy": s,
                        "baseline": baseline,
                        "metric": c,
                        "direction": direction(c),
                        "pairs": len(m),
                        "items": len(per_item),
                        "baseline_mean": float(m["b"].mean()),
                        "strategy_mean": float(m["a"].mean()),
                        "mean_diff": float(m["diff"].mean()),
                        "ci_low": lo,
                        "ci_high": hi,
                        "p_value": wilcoxon(per_item).p,
                    }
                )
    paired = pd.DataFrame(p_rows)
    if not paired.empty:
        paired["p_holm"] = paired.groupby("metric", observed=True)["p_value"].transform(lambda p: holm(list(p)))
        paired["significant"] = paired["p_holm"] < alpha
        paired["verdict"] = _verdicts(paired)

    # pass rate and its spread over repetitions
    df = df.assign(_pass=passed(df, pass_threshold))
    pr_rows = []
    for (s, mode), g in df.groupby(["strategy", "mode"], sort=False, observed=True):
        per_rep = g.groupby("repetition", observed=True)["_pass"].mean()
        per_item = g.groupby(list(ITEM_KEY), observed=True)["_pass"]
        lo, hi = bootstrap_mean_ci(per_item.mean().to_numpy(dtype=float), n_boot=n_boot, rng=_rng(seed, "pass", mode))
        pr_rows.append(
            {
                "strategy": s,
                "mode": mode,
                "turns": len(g),
                "repetitions": int(g["repetition"].nunique()),
                "pass_rate": float(g["_pass"].mean()),
                "ci_low": lo,
                "ci_high": hi,
                "rep_mean": float(per_rep.mean()),
                "rep_std": float(per_rep.std(ddof=1)) if len(per_rep) > 1 else 0.0,
                "rep_min": float(per_rep.min()),
                "rep_max": float(per_rep.max()),
                "pass_all_reps": float(per_item.all().mean()),
                "pass_any_rep": float(per_item.any().mean()),
                "error_rate": float(is_error(g).mean()),
            }
        )
    pass_rate = pd.DataFrame(pr_rows)

    lat = _latency_metric(df if objective.mode is None else df[df["mode"] == objective.mode], objective.latency)
    if lat != objective.latency:
        notes.append(f"no {objective.latency} figures in this run: the leaderboard ranks latency by {lat}")
        objective = replace(objective, latency=lat)
    leaderboard = _leaderboard(df, strategies, objective, paired, baseline, n_boot, seed)
    params = {
        "pass_threshold": pass_threshold,
        "alpha": alpha,
        "n_boot": n_boot,
        "seed": seed,
        "test": "Wilcoxon signed-rank on per-item mean differences, Holm-adjusted per metric",
    }
    return Comparison(baseline, objective, latency, quality, paired, pass_rate, leaderboard, notes, params)


def _verdicts(paired: pd.DataFrame) -> np.ndarray:
    """Better or worse by each metric's declared direction; a metric without one only says higher or lower."""
    diff = paired["mean_diff"]
    lower = paired["direction"] == "lower"
    better = (lower & (diff < 0)) | (~lower & (diff > 0))
    return np.select(
        [~paired["significant"], paired["direction"].isna(), better],
        ["no significant difference", np.where(diff > 0, "higher", "lower"), "better"],
        "worse",
    )


def _leaderboard(
    df: pd.DataFrame,
    strategies: list[str],
    objective: Objective,
    paired: pd.DataFrame,
    baseline: str | None,
    n_boot: int,
    seed: int,
) -> pd.DataFrame:
    d = df if objective.mode is None else df[df["mode"] == objective.mode]
    lat = objective.latency
    rows = []
    for s in strategies:
        g = d[d["strategy"] == s]
        if g.empty:
            continue
        item = _item_means(g.assign(_q=g[objective.quality].astype(float)), "_q")
        item = item[~np.isnan(item)]
        lo, hi = bootstrap_mean_ci(item, n_boot=n_boot, rng=_rng(seed, "board", objective.mode))
        v = g[lat].dropna().to_numpy(dtype=float)
        latency = float(np.percentile(v, objective.percentile)) if len(v) else math.nan
        row = {
            "strategy": s,
            "quality": float(g[objective.quality].astype(float).mean()),
            "quality_ci_low": lo,
            "quality_ci_high": hi,
            "latency_metric": lat,
            "latency": latency,
            "pass_rate": float(g["_pass"].mean()),
            "within_budget": bool(
                objective.budget_s is None or (not math.isnan(latency) and latency <= objective.budget_s)
            ),
        }
        if baseline is not None and not paired.empty:
            hit = paired[(paired["strategy"] == s) & (paired["metric"] == objective.quality)]
            row["quality_vs_baseline"] = float(hit["mean_diff"].iloc[0]) if len(hit) else math.nan
            row["p_holm"] = float(hit["p_holm"].iloc[0]) if len(hit) else math.nan
        rows.append(row)
    board = pd.DataFrame(rows)
    lower = objective.lower_is_better
    quality = board["quality"].to_numpy(float)
    board["pareto"] = pareto_front(board["latency"].to_numpy(float), -quality if lower else quality)
    board = board.sort_values(
        ["within_budget", "quality", "latency"], ascending=[False, lower, True], kind="stable", na_position="last"
    ).reset_index(drop=True)
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    return board


def pareto_front(latency: np.ndarray, quality: np.ndarray) -> list[bool]:
    """True for points no other point beats on both axes (lower latency, higher quality)."""
    out = []
    for i in range(len(latency)):
        if math.isnan(latency[i]) or math.isnan(quality[i]):
            out.append(False)
            continue
        dominated = any(
            j != i
            and not (math.isnan(latency[j]) or math.isnan(quality[j]))
            and latency[j] <= latency[i]
            and quality[j] >= quality[i]
            and (latency[j] < latency[i] or quality[j] > quality[i])
            for j in range(len(latency))
        )
        out.append(not dominated)
    return out
