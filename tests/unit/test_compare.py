"""compare(): percentiles, intervals, the paired test's power and calibration, pass rates, the leaderboard."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from workbench.analysis.compare import (
    Objective,
    bootstrap_mean_ci,
    compare,
    holm,
    pareto_front,
    passed,
)
from workbench.analysis.stats import wilcoxon
from workbench.analysis.synthetic import Profile, degrade, synthetic_run
from workbench.core.store import typed_frame


@pytest.fixture(scope="module")
def run() -> pd.DataFrame:
    return synthetic_run(conversations=12, turns=2, repetitions=3, seed=7)


def test_a_degraded_copy_is_detected_as_significantly_worse(run: pd.DataFrame) -> None:
    df = degrade(run, "plain", "plain_degraded", latency_factor=1.25, recall_drop=0.3)
    c = compare(df, baseline="plain", n_boot=500)
    p = c.paired.set_index(["strategy", "metric"])
    for metric in ("llm_ttfc_s", "llm_total_s", "v2v_s", "fact_recall"):
        row = p.loc[("plain_degraded", metric)]
        assert row["verdict"] == "worse", metric
        assert row["p_holm"] < 0.01, metric
        assert row["ci_low"] <= row["mean_diff"] <= row["ci_high"]
    ttfc = p.loc[("plain_degraded", "llm_ttfc_s")]
    assert ttfc["mean_diff"] > 0 and ttfc["ci_low"] > 0  # slower, and the interval excludes zero
    assert p.loc[("plain_degraded", "fact_recall"), "mean_diff"] < 0
    assert p.loc[("plain_degraded", "llm_ttfc_s"), "items"] == 2 * 24  # (conversation, turn, mode, voice)
    assert p.loc[("plain_degraded", "llm_ttfc_s"), "pairs"] == 2 * 24 * 3  # ... x repetition


def test_two_identical_strategies_show_no_difference(run: pd.DataFrame) -> None:
    twin = run[run["strategy"] == "plain"].assign(strategy="plain_twin")
    c = compare(pd.concat([run, twin], ignore_index=True), baseline="plain", n_boot=200)
    p = c.paired[c.paired["strategy"] == "plain_twin"]
    assert len(p) >= 5
    assert (p["verdict"] == "no significant difference").all()
    assert (p["mean_diff"] == 0).all() and (p["p_value"] == 1.0).all()


def test_independent_runs_of_the_same_strategy_are_not_called_different() -> None:
    same = {"plain": Profile(), "plain_again": Profile()}
    df = synthetic_run(same, conversations=15, turns=2, repetitions=2, modes=("text",), seed=3)
    c = compare(df, baseline="plain", n_boot=200)
    p = c.paired.set_index("metric")
    assert (p["verdict"] == "no significant difference").all(), p[["p_value", "verdict"]]


def test_wilcoxon_is_calibrated_on_null_differences_and_powerful_on_real_ones() -> None:
    rng = np.random.default_rng(0)
    # skewed, heavy-tailed paired latency differences with no shift (symmetric by construction)
    null = [wilcoxon(rng.lognormal(0, 0.6, 40) * rng.choice([-1, 1], 40)).p for _ in range(300)]
    false_positive = np.mean(np.array(null) < 0.05)
    assert 0.01 <= false_positive <= 0.09
    shifted = [wilcoxon(rng.lognormal(0, 0.6, 40) * rng.choice([-1, 1], 40) + 0.8).p for _ in range(100)]
    assert np.mean(np.array(shifted) < 0.05) > 0.8
    assert wilcoxon(np.zeros(10)).p == 1.0 and math.isnan(wilcoxon(np.array([])).p)


def test_latency_percentiles_are_the_plain_percentiles_of_each_strategy(run: pd.DataFrame) -> None:
    c = compare(run, baseline="plain", n_boot=50)
    lat = c.latency.set_index(["strategy", "mode"])
    g = run[(run["strategy"] == "rag") & (run["mode"] == "voice")]
    for p in (50, 90, 95):
        assert lat.loc[("rag", "voice"), f"v2v_s_p{p}"] == pytest.approx(np.percentile(g["v2v_s"], p))
        assert lat.loc[("rag", "voice"), f"llm_ttfc_s_p{p}"] == pytest.approx(np.percentile(g["llm_ttfc_s"], p))
    assert math.isnan(lat.loc[("rag", "text"), "v2v_s_p90"])  # text rows have no voice-to-voice


def test_bootstrap_interval_is_seeded_contains_the_mean_and_narrows_with_more_items() -> None:
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.6, 0.2, 20), rng.normal(0.6, 0.2, 400)
    a = bootstrap_mean_ci(small, rng=np.random.default_rng(5))
    assert a == bootstrap_mean_ci(small, rng=np.random.default_rng(5))
    assert a[0] < small.mean() < a[1]
    b = bootstrap_mean_ci(large, rng=np.random.default_rng(5))
    assert (b[1] - b[0]) < (a[1] - a[0]) / 2  # ~1/sqrt(20) of the width: about 4.5x narrower
    assert bootstrap_mean_ci(np.array([0.5, 0.5]), rng=rng) == (0.5, 0.5)


def test_quality_intervals_are_identical_for_identical_data_whatever_else_is_in_the_run(run: pd.DataFrame) -> None:
    twin = run[run["strategy"] == "plain"].assign(strategy="twin")
    c = compare(pd.concat([run, twin], ignore_index=True), baseline="plain", n_boot=300, seed=4)
    q = c.quality.set_index(["strategy", "mode", "metric"])
    pd.testing.assert_series_equal(
        q.loc[("plain", "text", "fact_recall")], q.loc[("twin", "text", "fact_recall")], check_names=False
    )
    again = compare(run, baseline="plain", n_boot=300, seed=4).quality.set_index(["strategy", "mode", "metric"])
    assert again.loc[("plain", "text", "fact_recall"), "ci_low"] == q.loc[("plain", "text", "fact_recall"), "ci_low"]


def _rows(spec: list[tuple[str, int, int, float | None, str | None]]) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for strategy, conv, rep, recall, err in spec:
        rows.append(
            {
                "strategy": strategy,
                "mode": "text",
                "voice": "",
                "conversation_id": f"c{conv}",
                "turn_index": 0,
                "repetition": rep,
                "facts": ["x"] if recall is not None else [],
                "answer": "a",
                "error_kind": err,
                "llm_ttfc_s": 0.5,
                "llm_total_s": 1.0,
                "fact_recall": recall if recall is not None else float("nan"),
            }
        )
    return typed_frame(rows)


def test_pass_means_no_error_and_enough_facts_and_its_spread_over_repetitions() -> None:
    df = _rows(
        [
            ("s", 1, 0, 1.0, None),
            ("s", 1, 1, 1.0, None),  # passes twice
            ("s", 2, 0, 0.5, None),
            ("s", 2, 1, 1.0, None),  # fails once on recall
            ("s", 3, 0, 1.0, "timeout"),
            ("s", 3, 1, 1.0, ""),  # fails once on an error ('' is no error)
            ("s", 4, 0, None, None),
            ("s", 4, 1, None, None),  # no facts to miss: passes
        ]
    )
    assert passed(df).tolist() == [True, True, False, True, False, True, True, True]
    assert passed(df, threshold=0.5).tolist()[2] is True
    c = compare(df, baseline=None, n_boot=50)
    pr = c.pass_rate.iloc[0]
    assert pr["pass_rate"] == pytest.approx(6 / 8)
    assert (pr["rep_min"], pr["rep_max"], pr["rep_mean"]) == pytest.approx((0.5, 1.0, 0.75))
    assert pr["rep_std"] == pytest.approx(np.std([0.5, 1.0], ddof=1))
    assert pr["pass_all_reps"] == pytest.approx(2 / 4) and pr["pass_any_rep"] == 1.0
    assert pr["error_rate"] == pytest.approx(1 / 8)
    assert compare(df, baseline=None, pass_threshold=0.5, n_boot=50).pass_rate.iloc[0]["pass_rate"] == 7 / 8


def _board_run() -> pd.DataFrame:
    """Four strategies with known quality (fact recall) and known p90 latency (constant per strategy)."""
    spec = {"accurate_slow": (1.0, 2.0), "balanced": (0.75, 1.0), "fast": (0.5, 0.6), "dominated": (0.5, 1.2)}
    rows = []
    for s, (recall, lat) in spec.items():
        for conv in range(4):
            rows.append(
                {
                    "strategy": s,
                    "mode": "text",
                    "voice": "",
                    "conversation_id": f"c{conv}",
                    "turn_index": 0,
                    "repetition": 0,
                    "facts": ["a", "b", "c", "d"],
                    "answer": "x",
                    "fact_recall": recall,
                    "llm_ttfc_s": lat,
                    "llm_total_s": lat + 1,
                }
            )
    return typed_frame(rows)


def test_leaderboard_ranks_best_quality_within_the_latency_budget() -> None:
    df = _board_run()
    board = compare(df, baseline="fast", objective="fact_recall@llm_ttfc_s:p90<=1.5", n_boot=50).leaderboard
    assert board["strategy"].tolist() == ["balanced", "fast", "dominated", "accurate_slow"]
    assert board.set_index("strategy")["within_budget"].to_dict() == {
        "balanced": True,
        "fast": True,
        "dominated": True,
        "accurate_slow": False,
    }
    assert board.set_index("strategy")["pareto"].to_dict() == {
        "balanced": True,
        "fast": True,
        "dominated": False,
        "accurate_slow": True,
    }
    unconstrained = compare(df, baseline="fast", objective=Objective(latency="llm_ttfc_s"), n_boot=50).leaderboard
    assert unconstrained["strategy"].tolist()[:2] == ["accurate_slow", "balanced"]
    # ties on quality are broken by latency
    assert unconstrained["strategy"].tolist()[2:] == ["fast", "dominated"]


def test_text_only_runs_rank_latency_by_time_to_first_chunk_and_say_so() -> None:
    c = compare(_board_run(), baseline="fast", objective="fact_recall@v2v_s:p90<=1.5", n_boot=50)
    assert set(c.leaderboard["latency_metric"]) == {"llm_ttfc_s"}
    assert any("no v2v_s" in n for n in c.notes)


def test_objective_parsing_and_bad_input() -> None:
    o = Objective.parse("semantic_similarity@v2v_s:p95<=1.2")
    assert (o.quality, o.latency, o.percentile, o.budget_s) == ("semantic_similarity", "v2v_s", 95.0, 1.2)
    assert Objective.parse("fact_recall") == Objective()
    with pytest.raises(ValueError, match="QUALITY"):
        Objective.parse("fact_recall @@ x")
    with pytest.raises(KeyError, match="no_such_metric"):
        compare(_board_run(), objective="no_such_metric", n_boot=10)


def test_missing_baseline_is_a_note_not_a_crash(run: pd.DataFrame) -> None:
    c = compare(run, baseline="nonexistent", n_boot=50)
    assert c.paired.empty and c.baseline is None
    assert any("nonexistent" in n for n in c.notes)


def test_pairs_are_matched_on_the_full_key_and_unmatched_rows_are_left_out(run: pd.DataFrame) -> None:
    rag = run[run["strategy"] == "rag"]
    partial = pd.concat([run[run["strategy"] == "plain"], rag[rag["repetition"] == 0]], ignore_index=True)
    p = compare(partial, baseline="plain", n_boot=50).paired.set_index("metric")
    assert p.loc["llm_ttfc_s", "pairs"] == len(rag[rag["repetition"] == 0])


def test_holm_adjustment_and_pareto_front() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([float("nan"), 0.02])[0]) and holm([float("nan"), 0.02])[1] == pytest.approx(0.02)
    front = pareto_front(np.array([1.0, 2.0, 1.5, np.nan]), np.array([0.5, 0.9, 0.4, 1.0]))
    assert front == [True, True, False, False]
