"""Eval gates on synthetic turn tables: bounds, paired regression tests with a tolerance, missing evidence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from workbench.analysis.gates import (
    Gate,
    GateSpecError,
    check_gate,
    check_regression,
    evaluate_gates,
    expand,
    parse_gates,
)
from workbench.analysis.stats import wilcoxon
from workbench.workflows.suite import Suite


def table(
    strategy: str,
    values: dict[str, list[float]],
    *,
    items: int | None = None,
    reps: int = 1,
    mode: str = "text",
    voice: str = "",
    errors: int = 0,
) -> pd.DataFrame:
    """Rows for one strategy: item i is conversation c{i}, turn 0; columns from ``values`` (one per row)."""
    n = len(next(iter(values.values())))
    items = items or n // reps
    rows = []
    for k in range(n):
        rows.append(
            {
                "strategy": strategy,
                "mode": mode,
                "voice": voice,
                "conversation_id": f"c{k % items}",
                "turn_index": 0,
                "repetition": k // items,
                "error_kind": "timeout" if k < errors else None,
                **{c: v[k] for c, v in values.items()},
            }
        )
    return pd.DataFrame(rows)


def gate(**kw) -> Gate:
    return parse_gates([kw])[0]


# -- the gate model ---------------------------------------------------------------------------------------
def test_bad_gates_are_clear_errors_that_name_the_gate() -> None:
    cases = {
        "exactly one of max: or min:": {"metric": "wer"},
        "max_drop: / max_rise:": {"metric": "wer", "max": 0.1, "max_rise": 0.1},
        "a percentage like '20%'": {"metric": "llm_ttfc_s", "max_rise": "fast"},
        "cannot be negative": {"metric": "fact_recall", "max_drop": -0.1},
        "stat: does not apply to a regression gate": {"metric": "llm_ttfc_s", "stat": "p90", "max_rise": 0.1},
        "against: applies to regression gates": {"metric": "wer", "max": 0.1, "against": "plain"},
        "Extra inputs are not permitted": {"metric": "wer", "max": 0.1, "maximum": 3},
        "stat": {"metric": "wer", "stat": "p42", "max": 0.1},
    }
    for message, spec in cases.items():
        with pytest.raises(GateSpecError, match=message) as e:
            parse_gates([{"metric": "error_rate", "max": 0}, spec])
        assert str(e.value).startswith("gate #2 ")


def test_a_suite_with_a_bad_gate_does_not_load_and_good_gates_stay_as_written() -> None:
    with pytest.raises(ValidationError, match=r"gate #1 .*exactly one of max: or min:"):
        Suite(gates=[{"metric": "wer", "stat": "p90"}])
    written = [{"metric": "fact_recall", "max_drop": "10%"}, {"metric": "v2v_s", "stat": "p90", "max": 2}]
    assert Suite(gates=written).model_dump()["gates"] == written  # the manifest keeps them verbatim


def test_labels_read_like_the_gate() -> None:
    assert gate(metric="llm_ttfc_s", stat="p90", max=1, mode="text").label == "p90 llm_ttfc_s (text)"
    assert gate(metric="error_rate", max=0).label == "error_rate"
    assert gate(metric="fact_recall", max_drop=0.05).label == "fact_recall drop <= 0.05 vs baseline run"
    assert (
        gate(metric="v2v_s", max_rise="20%", against="plain", mode="voice").label
        == "v2v_s rise <= 20% vs plain (voice)"
    )


# -- bounds -----------------------------------------------------------------------------------------------
def test_bound_statistics_match_numpy_and_compare_the_right_way() -> None:
    ttfc = [0.2, 0.3, 0.4, 0.5, 0.6, 0.3, 0.2, 0.4, 0.5, 0.9]
    df = table("plain", {"llm_ttfc_s": ttfc, "fact_recall": [1, 0.5] * 5}, errors=2)
    r = check_gate(df, "plain", gate(metric="llm_ttfc_s", stat="p90", max=0.6))
    assert r.value == pytest.approx(np.quantile(ttfc, 0.9)) and r.n == 10
    assert (r.status, r.passed, r.detail) == ("fail", False, f"{np.quantile(ttfc, 0.9):.4g} > 0.6")
    r = check_gate(df, "plain", gate(metric="llm_ttfc_s", stat="p50", max=0.6))
    assert r.passed and r.value == pytest.approx(0.4) and r.status == "pass"
    r = check_gate(df, "plain", gate(metric="fact_recall", min=0.8))
    assert (r.value, r.op, r.passed, r.detail) == (0.75, ">=", False, "0.75 < 0.8")
    r = check_gate(df, "plain", gate(metric="error_rate", max=0.1))
    assert r.value == pytest.approx(0.2) and not r.passed
    r = check_gate(df, "plain", gate(metric="error_kind", stat="rate", max=0.25))
    assert r.value == pytest.approx(0.2) and r.passed


def test_missing_evidence_is_an_error_never_a_pass() -> None:
    df = table("plain", {"llm_ttfc_s": [0.1, 0.2], "v2v_s": [np.nan, np.nan]})
    r = check_gate(df, "plain", gate(metric="faithfulness", min=0.5))
    assert (r.status, r.passed, r.value, r.failed) == ("error", False, None, True)
    assert "column 'faithfulness' is not in the run" in r.detail
    r = check_gate(df, "plain", gate(metric="v2v_s", stat="p90", max=2))
    assert r.status == "error" and "'v2v_s' is empty on all 2 rows of strategy 'plain'" in r.detail
    r = check_gate(df, "rag", gate(metric="llm_ttfc_s", max=2))
    assert r.status == "error" and "no rows for strategy 'rag'" in r.detail
    r = check_gate(df, "plain", gate(metric="faithfulness", min=0.5, required=False))
    assert (r.status, r.passed, r.failed) == ("skipped", False, False)


def test_mode_and_voice_scope_the_rows() -> None:
    df = pd.concat(
        [
            table("plain", {"v2v_s": [1.0, 1.2]}, mode="voice", voice="piper"),
            table("plain", {"v2v_s": [3.0, 3.4]}, mode="voice", voice="espeak"),
        ]
    )
    assert check_gate(df, "plain", gate(metric="v2v_s", max=2, voice="piper")).value == pytest.approx(1.1)
    assert check_gate(df, "plain", gate(metric="v2v_s", max=2, voice="espeak")).value == pytest.approx(3.2)
    r = check_gate(df, "plain", gate(metric="v2v_s", max=2, mode="text"))
    assert r.status == "error" and "in text mode" in r.detail


# -- regressions ---------------------------------------------------------------------------------------------
def test_an_identical_rerun_passes_with_p_1() -> None:
    base = table("rag", {"fact_recall": [1, 0.5, 0, 1, 0.5, 1, 1, 0]})
    r = check_regression(base.copy(), base, "rag", gate(metric="fact_recall", max_drop=0.05))
    assert (r.status, r.value, r.p_value, r.n, r.kind) == ("pass", 0.0, 1.0, 8, "regression")


def test_a_consistent_drop_beyond_the_tolerance_fails_with_the_exact_signed_rank_p() -> None:
    base = table("rag", {"fact_recall": [1.0] * 6})
    worse = table("rag", {"fact_recall": [0.0] * 6})
    r = check_regression(worse, base, "rag", gate(metric="fact_recall", max_drop=0.05))
    assert r.status == "fail" and r.value == pytest.approx(1.0)
    assert r.p_value == pytest.approx(0.5**6)  # all six items worse: the smallest one-sided p with six items
    assert (r.reference_value, r.strategy_value) == (1.0, 0.0) and "-> regression" in r.detail


def test_a_drop_within_the_tolerance_passes() -> None:
    base = table("rag", {"fact_recall": [0.9, 0.8, 1.0, 0.7, 0.9, 0.8, 1.0, 0.6]})
    worse = base.assign(fact_recall=base["fact_recall"] - 0.03)
    r = check_regression(worse, base, "rag", gate(metric="fact_recall", max_drop=0.05))
    assert r.passed and r.value == pytest.approx(0.03) and r.p_value > 0.5


def test_the_test_is_paired_not_a_comparison_of_two_means() -> None:
    """Items spread over 0.15..1; every item drops by 0.1. Two means overlap widely; the pairs do not."""
    from scipy.stats import ttest_ind

    vals = np.linspace(0.15, 1.0, 10)
    base = table("rag", {"fact_recall": list(vals)})
    worse = table("rag", {"fact_recall": list(vals - 0.1)}).sample(frac=1, random_state=3)  # any row order
    assert ttest_ind(vals - 0.1, vals, alternative="less").pvalue > 0.2  # two means: nothing to see
    r = check_regression(worse, base, "rag", gate(metric="fact_recall", max_drop=0.05))
    assert r.status == "fail" and r.p_value == pytest.approx(0.5**10) and r.value == pytest.approx(0.1)


def test_repetitions_are_averaged_per_item_before_testing() -> None:
    base = table("plain", {"llm_ttfc_s": [0.2] * 12}, items=6, reps=2)
    # rep 0 of every item is much slower, rep 1 equal: per item +0.25 s
    cur = table("plain", {"llm_ttfc_s": [0.7] * 6 + [0.2] * 6}, items=6, reps=2)
    r = check_regression(cur, base, "plain", gate(metric="llm_ttfc_s", max_rise=0.1))
    assert r.n == 6 and r.extra["pairs"] == 12 and r.value == pytest.approx(0.25) and r.status == "fail"
    r = check_regression(cur, base, "plain", gate(metric="llm_ttfc_s", max_rise=0.3))
    assert r.passed


def test_relative_tolerance_is_a_share_of_the_reference_mean() -> None:
    base = table("plain", {"llm_ttfc_s": [0.5, 0.4, 0.6, 0.5, 0.5, 0.4, 0.6, 0.5]})
    g = gate(metric="llm_ttfc_s", max_rise="20%")
    r = check_regression(base.assign(llm_ttfc_s=base["llm_ttfc_s"] * 1.1), base, "plain", g)
    assert r.passed and r.bound == pytest.approx(0.1)  # 20% of the 0.5 s mean
    r = check_regression(base.assign(llm_ttfc_s=base["llm_ttfc_s"] * 1.5), base, "plain", g)
    assert r.status == "fail"


def test_too_few_items_to_decide_is_an_error_not_a_pass() -> None:
    base = table("rag", {"fact_recall": [1.0, 1.0, 1.0]})
    worse = table("rag", {"fact_recall": [0.0, 0.0, 0.0]})
    r = check_regression(worse, base, "rag", gate(metric="fact_recall", max_drop=0.05))
    assert r.status == "error" and "cannot decide" in r.detail and "smallest possible p 0.125" in r.detail
    assert r.value == pytest.approx(1.0)


def test_regression_evidence_problems_are_named() -> None:
    base = table("rag", {"fact_recall": [1.0] * 6})
    g = gate(metric="fact_recall", max_drop=0.05)
    r = check_regression(base, None, "rag", g)
    assert (r.status, r.failed) == ("skipped", False) and "--baseline RUN" in r.detail
    r = check_regression(base, base.assign(strategy="plain"), "rag", g)
    assert r.status == "error" and "baseline run has no rows for strategy 'rag'" in r.detail
    r = check_regression(base, base.drop(columns="fact_recall"), "rag", g)
    assert r.status == "error" and "reference: column 'fact_recall' is not in the run" in r.detail
    r = check_regression(base, base.assign(conversation_id="other"), "rag", g)
    assert r.status == "error" and "no turn of the strategy has a matching turn" in r.detail


def test_one_sided_wilcoxon_direction() -> None:
    assert wilcoxon([0, 0, 0], "greater").p == 1.0
    assert wilcoxon([1, 2, 3, 4, 5], "greater").p == pytest.approx(1 / 32)
    assert wilcoxon([-1, -2, -3, -4, -5], "greater").p == pytest.approx(1.0)  # improvements are never a regression


# -- the whole suite -----------------------------------------------------------------------------------------
def test_evaluate_gates_expands_per_strategy_and_compares_within_the_run() -> None:
    df = pd.concat(
        [
            table("plain", {"fact_recall": [1.0] * 6, "llm_ttfc_s": [0.3] * 6}),
            table("extractive", {"fact_recall": [1.0] * 6, "llm_ttfc_s": [0.05] * 6}),
            table("rag", {"fact_recall": [0.0] * 6, "llm_ttfc_s": [0.5] * 6}),
        ]
    )
    suite = {
        "strategies": {"plain": "plain", "extractive": "extractive", "rag": "rag"},
        "baseline": "plain",
        "gates": [
            {"metric": "llm_ttfc_s", "stat": "p90", "max": 0.4},
            {"metric": "fact_recall", "max_drop": 0.1, "against": "baseline"},
            {"metric": "fact_recall", "max_drop": 0.1},
        ],
    }
    results = evaluate_gates(df, {}, suite)
    got = [(r.gate_index, r.strategy, r.status) for r in results]
    assert got == [
        (0, "plain", "pass"),
        (0, "extractive", "pass"),
        (0, "rag", "fail"),
        (1, "extractive", "pass"),
        (1, "rag", "fail"),  # not plain against itself
        (2, "plain", "skipped"),
        (2, "extractive", "skipped"),
        (2, "rag", "skipped"),  # no baseline run given
    ]
    assert results[4].reference == "strategy 'plain'"
    assert [(i, s) for i, _, s in expand(parse_gates(suite["gates"]), list(suite["strategies"]))] == [
        (r.gate_index, r.strategy) for r in results
    ]
    # with a baseline run (here: the same rows), the run regressions are decided
    results = evaluate_gates(df, {}, suite, baseline=df)
    assert [r.status for r in results if r.gate_index == 2] == ["pass", "pass", "pass"]


def test_evaluate_gates_uses_the_baseline_the_manifest_records(tmp_path) -> None:
    import json

    from workbench.core.store import MANIFEST_FILE, TURNS_FILE, typed_frame

    base = table("rag", {"llm_ttfc_s": [0.2] * 6})
    run = tmp_path / "b1"
    run.mkdir()
    (run / MANIFEST_FILE).write_text(json.dumps({"run_id": "b1", "status": "complete"}))
    typed_frame(base.to_dict("records")).to_parquet(run / TURNS_FILE, index=False)
    suite = {"strategies": {"rag": "rag"}, "gates": [{"metric": "llm_ttfc_s", "max_rise": 0.1}]}
    slow = base.assign(llm_ttfc_s=0.6)
    [r] = evaluate_gates(slow, {"eval": {"baseline_run": str(run)}}, suite)
    assert r.status == "fail" and r.reference == "baseline run b1"
    [r] = evaluate_gates(slow, {"eval": {"baseline_run": str(tmp_path / "gone")}}, suite)
    assert r.status == "error" and "baseline run not found" in r.detail
