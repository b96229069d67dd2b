"""The metric catalogue and the one definition of errors, pairing and the signed-rank test.

A column's direction is declared where the column is made (the schema, a scorer class), and compare,
gates and the summary read it from there: a user's own lower-is-better scorer is compared by default
and a drop in it is "better".
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from workbench.analysis.compare import compare
from workbench.analysis.gates import GateSpecError, check_gate, parse_gates
from workbench.analysis.stats import catalogue, is_error, label, pair_turns, score_columns, wilcoxon
from workbench.analysis.summary import run_summary
from workbench.core.metrics import METRICS, Direction, Metric, metric
from workbench.core.schema import COLUMNS
from workbench.core.store import typed_frame
from workbench.scoring import SCORERS, Scorer, available_scorers, scorer

IDENTITY = {"turn_index", "repetition"}  # numbers that name a row rather than measure it
FILLER = "_test_filler_words"


def _filler_scorer(direction: Direction | None = "lower") -> type[Scorer]:
    """Defines (and registers) the same class each call, as a re-run notebook cell does."""

    @scorer(FILLER)
    class FillerWords(Scorer):
        metrics = (Metric("filler_words", "filler words", "words", direction, "um and uh per answer"),)

        def score(self, df: pd.DataFrame, ctx: Any) -> pd.DataFrame:
            words = df["answer"].fillna("").str.lower().str.split()
            return pd.DataFrame({"filler_words": [sum(w in ("um", "uh") for w in ws) for ws in words]}, index=df.index)

    return FillerWords


@pytest.fixture
def filler() -> Iterator[type[Scorer]]:
    cls = _filler_scorer()
    try:
        yield cls
    finally:
        SCORERS.pop(FILLER, None)
        METRICS.discard("filler_words")


def _rows(fillers: dict[str, float], conversations: int = 12) -> pd.DataFrame:
    """Text turns of each strategy, one per conversation: its filler words (plus a little spread) and one fact."""
    rows: list[dict[str, Any]] = []
    for strategy, level in fillers.items():
        for conv in range(conversations):
            key = {"strategy": strategy, "mode": "text", "voice": "", "conversation_id": f"c{conv}"}
            rows.append(
                key
                | {"turn_index": 0, "repetition": 0, "facts": ["x"], "answer": "x", "error_kind": None}
                | {"llm_ttfc_s": 0.5, "llm_total_s": 1.0, "fact_recall": 1.0, "filler_words": level + 0.01 * conv}
            )
    return typed_frame(rows)


# -- the catalogue ----------------------------------------------------------------------------------------
def test_every_measured_schema_column_and_every_builtin_scorer_column_has_a_declared_direction() -> None:
    cat = catalogue()
    measured = [c for c, (dtype, _) in COLUMNS.items() if dtype in ("float64", "int64") and c not in IDENTITY]
    builtin = [
        c for cls in available_scorers().values() if cls.__module__.startswith("workbench.") for c in cls.columns
    ]
    assert "wer" in builtin and "fact_recall" in builtin
    for c in [*measured, *builtin]:
        m = cat.metric(c)
        assert m is not None, f"{c} has no metric"
        assert m.direction in ("higher", "lower", None) and m.label, c
    assert {cat.metric(c).direction for c in ("llm_ttfc_s", "llm_total_s", "v2v_s", "stt_s", "wer")} == {"lower"}
    assert {cat.metric(c).direction for c in ("fact_recall", "rouge_l", "ctx_recall_id", "lk_accuracy")} == {"higher"}
    assert cat.metric("facts_missed").direction is None  # a list: no better side
    assert label("v2v_s") == "voice to voice"


def test_a_metric_states_its_direction_and_a_typo_is_not_higher_is_better() -> None:
    with pytest.raises(TypeError):
        Metric("x", "x", "")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="'lowr'"):
        Metric("x", "x", "", "lowr")  # type: ignore[arg-type]


# -- a user's scorer in compare ------------------------------------------------------------------------------
def test_a_custom_lower_is_better_scorer_is_compared_by_default_and_a_drop_is_better(filler: type[Scorer]) -> None:
    df = _rows({"plain": 3.0, "tidy": 1.0, "chatty": 5.0})
    assert "filler_words" in score_columns(df)
    c = compare(df, baseline="plain", n_boot=50)
    assert "filler_words" in set(c.quality["metric"])
    p = c.paired.set_index(["strategy", "metric"])
    tidy, chatty = p.loc[("tidy", "filler_words")], p.loc[("chatty", "filler_words")]
    assert tidy["direction"] == chatty["direction"] == "lower"
    assert tidy["mean_diff"] < 0 and tidy["verdict"] == "better"
    assert chatty["mean_diff"] > 0 and chatty["verdict"] == "worse"
    board = compare(df, baseline="plain", objective="filler_words@llm_ttfc_s", n_boot=50)
    assert board.leaderboard["strategy"].tolist() == ["tidy", "plain", "chatty"]  # lowest first
    assert board.objective.describe().startswith("lowest mean filler_words")


def test_a_metric_without_a_direction_gets_higher_or_lower_not_better_or_worse(filler: type[Scorer]) -> None:
    _filler_scorer(direction=None)
    p = compare(_rows({"plain": 3.0, "tidy": 1.0}), baseline="plain", n_boot=50).paired.set_index("metric")
    assert p.loc["filler_words", "verdict"] == "lower"


def test_a_regression_gate_must_go_the_metric_s_way(filler: type[Scorer]) -> None:
    with pytest.raises(GateSpecError, match=r"lower is better for llm_ttfc_s.*use max_rise"):
        parse_gates([{"metric": "llm_ttfc_s", "max_drop": 0.1}])
    with pytest.raises(GateSpecError, match="use max_drop"):
        parse_gates([{"metric": "fact_recall", "max_rise": 0.1}])
    with pytest.raises(GateSpecError, match="use max_rise"):
        parse_gates([{"metric": "filler_words", "max_drop": 1}])
    assert parse_gates([{"metric": "filler_words", "max_rise": 1}, {"metric": "undeclared", "max_drop": 1}])


# -- registration ---------------------------------------------------------------------------------------------
def test_re_registering_the_same_scorer_class_replaces_it_and_its_metric(filler: type[Scorer]) -> None:
    again = _filler_scorer(direction="higher")
    assert again is not filler and SCORERS[FILLER] is again
    assert again.columns == ("filler_words",)
    assert metric("filler_words").direction == "higher"
    other = type("OtherFiller", (Scorer,), {"metrics": filler.metrics, "score": filler.score, "__module__": __name__})
    with pytest.raises(ValueError, match="already registered by"):
        scorer(FILLER)(other)
    assert SCORERS[FILLER] is again


def test_a_scorer_listing_columns_must_cover_its_metrics() -> None:
    body = {"columns": ("a",), "metrics": (Metric("b", "b", "", "higher"),), "score": lambda self, df, ctx: df}
    cls = type("Stray", (Scorer,), body)
    with pytest.raises(ValueError, match=r"metrics \['b'\] are not among its columns"):
        scorer("_test_stray")(cls)
    assert "_test_stray" not in SCORERS


# -- one definition each ---------------------------------------------------------------------------------------
MISSING = ["None", "nan", "", " ", None, float("nan"), pd.NA]


@pytest.mark.parametrize("dtype", ["object", "string"])
def test_is_error_treats_every_spelling_of_missing_as_no_error(dtype: str) -> None:
    values = [*MISSING, "timeout", "http_500"]
    if dtype == "string":
        values = [v if isinstance(v, str) else None for v in values]
    df = pd.DataFrame({"error_kind": pd.Series(values, dtype=dtype)})
    assert is_error(df).tolist() == [False] * (len(values) - 2) + [True, True]
    assert not is_error(pd.DataFrame({"answer": ["a"]})).any()  # a table without the column has no errors


def test_summary_pass_rate_and_gates_agree_on_the_error_rate() -> None:
    rows = _rows({"plain": 1.0}, conversations=len(MISSING) + 2)
    rows["error_kind"] = pd.Series([*MISSING, "timeout", "timeout"], dtype="object")
    expected = 2 / len(rows)
    assert run_summary(rows)["error_rate"].iloc[0] == pytest.approx(expected, abs=1e-3)
    assert compare(rows, baseline=None, n_boot=20).pass_rate["error_rate"].iloc[0] == pytest.approx(expected)
    gate = parse_gates([{"metric": "error_rate", "max": 1.0}])[0]
    assert check_gate(rows, "plain", gate).value == pytest.approx(expected)


def test_pair_turns_matches_the_full_key_and_treats_missing_mode_and_voice_as_empty() -> None:
    a = _rows({"a": 1.0}, conversations=3)
    b = _rows({"b": 0.0}, conversations=3).assign(voice=[None, "", ""])
    b.loc[2, "filler_words"] = math.nan
    m = pair_turns(a, b.drop(index=1), "filler_words")
    assert m["conversation_id"].tolist() == ["c0"]  # c1 has no partner, c2 no value on one side
    assert m["diff"].tolist() == pytest.approx([1.0])


def test_the_one_wilcoxon_gives_scipy_s_p_both_sided_and_one_sided() -> None:
    rng = np.random.default_rng(3)
    d = rng.normal(0.3, 1.0, 25)
    for alternative in ("two-sided", "greater", "less"):
        ours = wilcoxon(d, alternative)
        assert ours.p == pytest.approx(scipy_stats.wilcoxon(d, alternative=alternative).pvalue, rel=1e-12)
        assert ours.nonzero == len(d)
    ties = np.array([0.0, 1e-15, 0.5, -0.2, 0.9, 1.3, 0.7])  # 1e-15: float noise, a tie like the exact zero
    snapped = np.where(np.abs(ties) > 1e-12, ties, 0.0)
    for alternative in ("two-sided", "greater"):
        ref = scipy_stats.wilcoxon(snapped, zero_method="wilcox", alternative=alternative).pvalue
        assert wilcoxon(ties, alternative).p == pytest.approx(ref, rel=1e-12)
    assert wilcoxon(ties).nonzero == 5
    assert wilcoxon([0.0, 1e-14]).p == 1.0 and math.isnan(wilcoxon([]).p)


def test_summary_shows_tool_call_accuracy_per_strategy_only_when_a_row_has_it() -> None:
    import workbench.scoring  # noqa: F401  (declares the scorers' metrics)

    rows = _rows({"plain": 1.0, "autogen": 1.0}, conversations=2)
    plain = rows["strategy"] == "plain"
    without = run_summary(rows)
    assert "tool_call_accuracy" not in without.columns and "fact_recall" in without.columns
    rows["tool_call_accuracy"] = [1.0, 0.5, 0.0, 0.0]  # plain called the tools, autogen did not
    rows.loc[~plain, "tool_call_accuracy"] = 0.0
    got = run_summary(rows).set_index("strategy")["tool_call_accuracy"]
    assert got.to_dict() == {"plain": 0.75, "autogen": 0.0}
