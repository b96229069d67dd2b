"""Tool-call scorers: the calls a turn made (``tool_calls``) vs the calls its dataset turn expects (``expected_tools``).

``tool_call_accuracy`` is ragas' rule-based ``ToolCallAccuracy`` (strict order, no LLM): 0 unless the
tools called are exactly the expected ones in the expected order, else the mean share of expected
argument values the calls gave (a value matches when its text is equal). A turn that expects no call
(``expect_tools: []``) scores 1 with no call and 0 with any.

``tool_args_match`` is the share of expected calls that were made with matching arguments, as the
dataset's ``match`` says: ``subset`` (every expected argument given with this value, others allowed)
or ``exact`` (these arguments and no others). Order does not matter here; each call is used once.

Turns whose dataset states no expectation are not scored (NaN); a run with none is skipped, and says so.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from workbench.core.aio import run_sync
from workbench.core.metrics import Metric
from workbench.replay.tools import load_calls
from workbench.scoring.base import ScoreContext, Scorer, scorer
from workbench.scoring.offline import ragas_metrics

NAN = float("nan")
NO_EXPECTATION = "no turn states expected tool calls (add expect_tools to the dataset's turns)"


def args_match(given: Any, expected: dict[str, Any], match: str = "subset") -> bool:
    """Whether a call's arguments match the expected ones (``subset`` or ``exact``); JSON values compare equal."""
    if not isinstance(given, dict):
        return False
    if match == "exact":
        return given == expected
    return all(k in given and given[k] == v for k, v in expected.items())


def args_match_share(calls: list[dict[str, Any]], expected: list[dict[str, Any]]) -> float:
    """Share of ``expected`` calls made with matching arguments; each call answers at most one expectation."""
    if not expected:
        return NAN
    used: set[int] = set()
    hits = 0
    for exp in expected:
        same_name = [i for i, c in enumerate(calls) if i not in used and c.get("name") == exp.get("name")]
        good = [
            i for i in same_name if args_match(calls[i].get("arguments"), exp.get("args") or {}, exp.get("match", ""))
        ]
        if good:
            used.add(good[0])
            hits += 1
        elif same_name:
            used.add(same_name[0])  # the call meant for this expectation, with the wrong arguments
    return hits / len(expected)


def _has_expectations(df: pd.DataFrame) -> bool:
    return "expected_tools" in df.columns and any(load_calls(v) is not None for v in df["expected_tools"])


class _ToolScorer(Scorer):
    def unavailable(self, df: pd.DataFrame, ctx: ScoreContext) -> str | None:
        return None if _has_expectations(df) else NO_EXPECTATION

    @staticmethod
    def pairs(df: pd.DataFrame) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]] | None]]:
        """(calls made, calls expected or None) per row; a row with no recorded calls made none."""
        made = df["tool_calls"] if "tool_calls" in df.columns else pd.Series([None] * len(df), index=df.index)
        return [(load_calls(c) or [], load_calls(e)) for c, e in zip(made, df["expected_tools"], strict=True)]


@scorer("tool_call_accuracy")
class ToolCallAccuracyScorer(_ToolScorer):
    """ragas ToolCallAccuracy (strict order): the expected tools called in order, with their argument values."""

    metrics = (
        Metric(
            "tool_call_accuracy",
            "tool-call accuracy",
            "",
            "higher",
            "ragas ToolCallAccuracy, strict order: 0 unless the expected tools were called in order, "
            "else the share of expected argument values given, 0-1",
            True,  # in the run summary: a suite with expected tool calls is about them
        ),
    )
    description = "ragas ToolCallAccuracy(strict_order=True): tool_calls vs expected_tools"

    def score(self, df: pd.DataFrame, ctx: ScoreContext) -> pd.DataFrame:
        ragas_metrics()
        from ragas.messages import AIMessage, ToolCall
        from ragas.metrics.collections import ToolCallAccuracy

        metric = ToolCallAccuracy(strict_order=True)
        pairs = self.pairs(df)

        def as_ragas(calls: list[dict[str, Any]], key: str) -> list[Any]:
            return [
                ToolCall(name=str(c.get("name")), args=c.get(key) if isinstance(c.get(key), dict) else {})
                for c in calls
            ]

        async def run() -> list[float]:
            out = []
            for calls, expected in pairs:
                if expected is None:
                    out.append(NAN)
                    continue
                made = [AIMessage(content="", tool_calls=as_ragas(calls, "arguments"))] if calls else []
                with warnings.catch_warnings():  # ragas warns on every length mismatch: the score says it
                    warnings.simplefilter("ignore")
                    res = await metric.ascore(user_input=made, reference_tool_calls=as_ragas(expected, "args"))
                out.append(float(res.value))
            return out

        return pd.DataFrame({"tool_call_accuracy": np.asarray(run_sync(run), dtype=float)}, index=df.index)


@scorer("tool_args_match")
class ToolArgsMatchScorer(_ToolScorer):
    """Share of the expected tool calls made with matching arguments (exact or subset, per expectation)."""

    metrics = (
        Metric(
            "tool_args_match",
            "tool arguments match",
            "",
            "higher",
            "share of the turn's expected tool calls made with matching arguments (exact or subset), 0-1",
            True,
        ),
    )
    description = "expected_tools' args vs the calls' arguments (match: subset or exact)"

    def score(self, df: pd.DataFrame, ctx: ScoreContext) -> pd.DataFrame:
        values = [NAN if exp is None else args_match_share(calls, exp) for calls, exp in self.pairs(df)]
        note = None
        if not any(v == v for v in values):  # only `expect_tools: []` turns: nothing to match arguments against
            note = "every turn with expectations expects no tool call"
        self.note = note
        return pd.DataFrame({"tool_args_match": np.asarray(values, dtype=float)}, index=df.index)
