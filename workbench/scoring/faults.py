"""The ``faults`` scorer: ``fault_ok``, whether each fault conversation of a run was handled as expected.

A fault conversation (tag ``fault:NAME``, written by :mod:`workbench.workflows.faults`) has the caller
turns :data:`USER_TURNS`; the middle one (:data:`FAULT_TURN`) carries a marker such as ``fault-http-500``
that the scripted endpoint or the fake speech components turn into that fault. It was handled when the
fault turn recorded the expected ``error_kind``, a fallback or the apology reached the caller within the
strategy's budget, and the turns before and after it are intact. The budgets (seconds per strategy) are in
the answer key the fault run writes beside its conversations (:data:`ANSWER_KEY`); without it no time is
checked. A gate ``{metric: fault_ok, stat: min, min: 1}`` holds every fault x strategy x mode in CI.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.core.io import atomic_write_json
from workbench.core.metrics import Metric
from workbench.faults.endpoint import FAULTS as ENDPOINT_FAULTS
from workbench.scoring.base import ScoreContext, Scorer, scorer

SPEECH_FAULTS: tuple[str, ...] = ("stt_error", "tts_error")
ALL_FAULTS: tuple[str, ...] = (*ENDPOINT_FAULTS, *SPEECH_FAULTS)
EXPECTED_KIND: dict[str, str] = {
    "http_500": "http_500",
    "http_429": "http_429",
    "refuse": "connection",  # the server closes the connection before any response
    "hang": "timeout",  # the strategy's first-chunk timeout
    "cut": "stream_cut",
    "cut_clean": "stream_cut",  # a close-delimited body closed mid-answer: no finish_reason, no [DONE]
    "malformed": "malformed",
    "trickle": "timeout",  # the strategy's between-chunk timeout
    "stt_error": "stt_error",
    "tts_error": "tts_error",
}
"""The ``error_kind`` a turn row must record for each fault."""
TURN_TAKING: tuple[str, ...] = ("barge_in", "noise")
"""Voice turn-taking checks a fault suite can add (``turn_taking:``): the middle turn starts over the agent's
first reply. ``barge_in``: the caller talks, and the agent must yield within the yield budget; ``noise``: a
0.2 s burst marked ``expect_yield: false``, which the agent must talk through. Text mode replays them as
ordinary turns (controls)."""
EXPECTED_YIELD: dict[str, str] = {"barge_in": "yields", "noise": "talks through"}
PARTIAL_FAULTS = frozenset({"cut", "cut_clean", "malformed", "trickle"})  # some words were spoken before the fault
USER_TURNS = (
    "What time do you open on Monday?",
    "Can I book a check-up with Doctor Lee ({marker})?",
    "Thanks, and where do I park?",
)
"""What the caller says in every fault conversation; ``{marker}`` names the fault."""
FAULT_TURN = 1  # one healthy turn before the fault, one after it
ANSWER_KEY = "faults.json"
"""Beside ``conversations.jsonl``: ``{"budget_s": {strategy: seconds}}``, the latest a recovery may be heard, and
``yield_budget_s``, the latest the agent may stop talking after a barge-in's first words."""
_MARKER_RE = re.compile(r"\bfault-([a-z0-9]+(?:-[a-z0-9]+)*)\b")


def marker(fault: str) -> str:
    """The word that names ``fault`` inside a caller's turn (hyphens: markdown and TTS clean-up leave it alone)."""
    return "fault-" + fault.replace("_", "-")


def fault_in(text: str | None) -> str | None:
    """The fault a text's marker names, or None."""
    m = _MARKER_RE.search(text or "")
    if not m:
        return None
    name = m.group(1).replace("-", "_")
    return name if name in ALL_FAULTS else None


def fault_of(tags: Any) -> str | None:
    """The fault a conversation carries, from its ``fault:NAME`` tag; None for any other conversation."""
    for t in list(tags) if tags is not None and not isinstance(tags, str) else []:
        if isinstance(t, str) and t.startswith("fault:"):
            return t.split(":", 1)[1]
    return None


def write_answer_key(dataset: Path, budget_s: Mapping[str, float], yield_budget_s: float | None = None) -> Path:
    key: dict[str, Any] = {"budget_s": dict(budget_s)}
    if yield_budget_s is not None:
        key["yield_budget_s"] = yield_budget_s
    return atomic_write_json(Path(dataset) / ANSWER_KEY, key)


def read_budgets(dataset: str | Path | None) -> dict[str, float] | None:
    """The recovery budget per strategy from a dataset's answer key; None when it has none."""
    if dataset is None or not (Path(dataset) / ANSWER_KEY).exists():
        return None
    data = json.loads((Path(dataset) / ANSWER_KEY).read_text(encoding="utf-8"))
    return {str(k): float(v) for k, v in (data.get("budget_s") or {}).items()}


def read_yield_budget(dataset: str | Path | None) -> float | None:
    """The barge-in yield budget from a dataset's answer key; None when it has none."""
    if dataset is None or not (Path(dataset) / ANSWER_KEY).exists():
        return None
    value = json.loads((Path(dataset) / ANSWER_KEY).read_text(encoding="utf-8")).get("yield_budget_s")
    return None if value is None else float(value)


# -- the verdict per conversation ------------------------------------------------------------------------
def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _text(v: Any) -> str:
    return "" if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else str(v)


def _outcome(row: Mapping[str, Any]) -> str:
    kind, fb = _text(row.get("error_kind")), _text(row.get("fallback"))
    if not kind:
        return "no fault seen"
    if fb and fb != "apology":
        return f"fallback {fb}" + (" after partial" if row.get("partial") is True else "")
    if fb == "apology":
        return "apology" + (" after partial" if row.get("partial") is True else "")
    if kind == "stt_error":
        return "no reply (not heard)"
    if kind == "tts_error":
        return "silent reply"
    return "failed"


def _flag(v: Any) -> bool | None:
    """A boolean cell as True/False, or None when empty (None, NaN, pd.NA)."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    return bool(v)


def _judge_turn_taking(fault: str, mode: str, rows: pd.DataFrame, yield_budget: float | None) -> dict[str, Any]:
    """A barge-in conversation's verdict: the agent yielded in time (``barge_in``) or talked through the noise
    (``noise``), and every turn is intact (the noise turn needs no reply of its own)."""
    by_turn = {int(r["turn_index"]): r for r in rows.to_dict("records")}
    row = by_turn.get(FAULT_TURN, {})
    voice = mode == "voice"
    problems = []
    if len(by_turn) != len(USER_TURNS):
        problems.append(f"{len(by_turn)} of {len(USER_TURNS)} turn rows stored")
    for t, r in by_turn.items():
        needs_answer = not (voice and fault == "noise" and t == FAULT_TURN)
        if _text(r.get("error_kind")) or (needs_answer and not _text(r.get("answer"))):
            problems.append(f"turn {t} failed ({_text(r.get('error_kind')) or 'empty answer'})")
    yielded, took = _flag(row.get("yielded")), _num(row.get("yield_s"))
    outcome = "control (needs voice)"
    if voice:
        if fault == "barge_in":
            outcome = f"yielded after {took:.2f} s" if yielded and took is not None else "did not yield"
            if not yielded:
                problems.append(f"the agent did not yield (yielded={yielded})")
            elif (
                row.get("realtime") is not False and yield_budget is not None and (took is None or took > yield_budget)
            ):
                problems.append(f"yielded after {took} s > {yield_budget:.2f} s")
        else:
            outcome = "false interruption" if yielded else "talked through"
            if yielded is None:
                outcome = "no overlap"
                problems.append("the noise did not overlap the agent's reply")
            elif yielded or _flag(row.get("false_interruption")):
                problems.append("the agent stopped for noise (false interruption)")
    return {
        "outcome": outcome,
        "error_kind": _text(row.get("error_kind")) or None,
        "fallback": None,
        "partial": False,
        "heard_s": took,
        "recovery_s": None,
        "budget_s": yield_budget if voice and fault == "barge_in" else None,
        "next_turn_ok": not any(p.startswith(f"turn {FAULT_TURN + 1} ") for p in problems),
        "passed": not problems,
        "problems": "; ".join(problems),
    }


def _judge(fault: str, mode: str, rows: pd.DataFrame, budget: float | None) -> dict[str, Any]:
    """One conversation's verdict: the fault turn recorded as expected, recovered in time, the rest intact."""
    by_turn = {int(r["turn_index"]): r for r in rows.to_dict("records")}
    fault_row = by_turn.get(FAULT_TURN, {})
    applies = fault in ENDPOINT_FAULTS or mode == "voice"
    kind = _text(fault_row.get("error_kind"))
    fallback = _text(fault_row.get("fallback"))
    heard = _num(fault_row.get("v2v_s" if mode == "voice" else "llm_ttfc_s"))
    recovery = _num(fault_row.get("recovery_s"))
    problems = []
    if len(by_turn) != len(USER_TURNS):
        problems.append(f"{len(by_turn)} of {len(USER_TURNS)} turn rows stored")
    for t, r in by_turn.items():
        healthy_turn = t != FAULT_TURN or not applies
        if healthy_turn and (_text(r.get("error_kind")) or not _text(r.get("answer"))):
            problems.append(f"turn {t} failed ({_text(r.get('error_kind')) or 'empty answer'})")
    if applies:
        if kind != EXPECTED_KIND[fault]:
            problems.append(f"error_kind {kind or 'none'}, expected {EXPECTED_KIND[fault]}")
        if fault in ENDPOINT_FAULTS:
            if not fallback:
                problems.append("no fallback or apology")
            if (fault in PARTIAL_FAULTS) != (fault_row.get("partial") is True):
                problems.append(f"partial={fault_row.get('partial')}")
            if fault_row.get("realtime") is not False and budget is not None:
                if recovery is None:
                    problems.append("no recovery time recorded")
                elif recovery > budget:
                    problems.append(f"recovered after {recovery:.2f} s > {budget:.2f} s")
            if not _text(fault_row.get("answer")):
                problems.append("the caller heard nothing")
    return {
        "outcome": _outcome(fault_row) if applies else "control (fault needs voice)",
        "error_kind": kind or None,
        "fallback": fallback or None,
        "partial": bool(fault_row.get("partial") is True),
        "heard_s": heard,
        "recovery_s": recovery,
        "budget_s": budget if applies and fault in ENDPOINT_FAULTS else None,
        "next_turn_ok": not any(p.startswith(f"turn {FAULT_TURN + 1} ") for p in problems),
        "passed": not problems,
        "problems": "; ".join(problems),
    }


VERDICT_COLUMNS = (
    "fault",
    "strategy",
    "mode",
    "expected",
    "outcome",
    "error_kind",
    "fallback",
    "partial",
    "heard_s",
    "recovery_s",
    "budget_s",
    "next_turn_ok",
    "passed",
    "problems",
)


def fault_verdicts(
    df: pd.DataFrame, budget_s: Mapping[str, float] | None = None, yield_budget_s: float | None = None
) -> pd.DataFrame:
    """One row per fault conversation x strategy x mode: what its fault turn recorded, and whether it was handled.

    ``df`` is a turn table; conversations without a ``fault:NAME`` tag are ignored. ``budget_s``: the
    latest a recovery may be heard, per strategy (None: no time is checked); ``yield_budget_s``: the latest a
    barge-in may be yielded to (for those, ``heard_s`` is ``yield_s``). The columns are described
    by :func:`workbench.workflows.faults.fault_table`, which computes the budgets from strategy configs.
    """
    cols = list(VERDICT_COLUMNS)
    if df is None or df.empty or "tags" not in df.columns:
        return pd.DataFrame(columns=cols)
    d = df.assign(fault=df["tags"].map(fault_of))
    d = d[d["fault"].notna()]
    out = []
    for (fault, strategy, mode, _voice), rows in d.groupby(["fault", "strategy", "mode", "voice"], sort=False):
        for _, conv_rows in rows.groupby(["conversation_id", "repetition"], sort=False):
            if fault in TURN_TAKING:
                verdict = _judge_turn_taking(str(fault), str(mode), conv_rows, yield_budget_s)
            else:
                verdict = _judge(str(fault), str(mode), conv_rows, (budget_s or {}).get(str(strategy)))
            expected = EXPECTED_KIND.get(str(fault)) or EXPECTED_YIELD.get(str(fault), "?")
            out.append({"fault": fault, "strategy": strategy, "mode": mode, "expected": expected, **verdict})
    table = pd.DataFrame(out, columns=cols)
    order = {f: i for i, f in enumerate((*ALL_FAULTS, *TURN_TAKING))}
    return table.sort_values(
        ["mode", "fault", "strategy"], key=lambda s: s.map(order) if s.name == "fault" else s, kind="stable"
    ).reset_index(drop=True)


def fault_scores(
    df: pd.DataFrame, budget_s: Mapping[str, float] | None = None, yield_budget_s: float | None = None
) -> pd.DataFrame:
    """``fault`` and ``fault_ok`` for ``df``'s rows (same index): 1.0 when every conversation of that fault x
    strategy x mode passed :func:`fault_verdicts`, 0.0 when one did not, NaN outside fault conversations."""
    table = fault_verdicts(df, budget_s, yield_budget_s)
    fault = df["tags"].map(fault_of) if "tags" in df.columns else pd.Series(None, index=df.index, dtype=object)
    ok: dict[tuple[Any, ...], float] = {}
    for r in table.itertuples():
        key = (r.fault, r.strategy, r.mode)
        ok[key] = min(ok.get(key, 1.0), float(r.passed))
    fault_ok = [
        ok.get((f, s, m), math.nan) if f else math.nan
        for f, s, m in zip(fault, df["strategy"], df["mode"], strict=True)
    ]
    return pd.DataFrame({"fault": fault, "fault_ok": fault_ok}, index=df.index)


@scorer("faults")
class FaultScorer(Scorer):
    """``fault_ok`` for the fault conversations of a run (see the module docstring)."""

    metrics = (
        Metric("fault", "fault injected", "", None, "the fault the conversation carries (its fault:NAME tag)"),
        Metric(
            "fault_ok",
            "fault handled",
            "",
            "higher",
            "1 when the fault turn recorded the expected error, a fallback or apology came in time and the "
            "turns around it are intact; 0 otherwise",
        ),
    )
    description = "fault conversations (tag fault:NAME): the fault recorded as expected and recovered from in time"

    def unavailable(self, df: pd.DataFrame, ctx: ScoreContext) -> str | None:
        if "tags" not in df.columns or df["tags"].map(fault_of).isna().all():
            return "no fault conversations (tag fault:NAME) in this run"
        return None

    def score(self, df: pd.DataFrame, ctx: ScoreContext) -> pd.DataFrame:
        budgets = read_budgets(ctx.dataset)
        self.note: str | None = None
        if budgets is None:
            self.note = f"recovery times not checked: the dataset has no {ANSWER_KEY}"
        return fault_scores(df, budgets, read_yield_budget(ctx.dataset))


__all__ = [
    "ALL_FAULTS",
    "ANSWER_KEY",
    "ENDPOINT_FAULTS",
    "EXPECTED_KIND",
    "FAULT_TURN",
    "PARTIAL_FAULTS",
    "SPEECH_FAULTS",
    "TURN_TAKING",
    "USER_TURNS",
    "FaultScorer",
    "fault_in",
    "fault_of",
    "fault_scores",
    "fault_verdicts",
    "marker",
    "read_budgets",
    "read_yield_budget",
    "write_answer_key",
]
