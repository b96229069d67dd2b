"""Tool calls: expected in the dataset, mocked per turn, recorded in the turn table, scored and gated.

A user agent with real tools (one returns, one raises, one hangs) answers through the scripted endpoint,
whose scripts make the model call them; text mode runs the real session, voice mode the light speech stack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from workbench.analysis.gates import evaluate_gates
from workbench.core.metrics import metric
from workbench.core.store import typed_frame
from workbench.faults.endpoint import Script, ScriptedEndpoint, ToolCall
from workbench.faults.speech import FixedDelaySTT
from workbench.pipeline.agents import AgentFactory
from workbench.replay.dataset import Conversation, load_dataset, parse_conversations
from workbench.replay.text import replay_text
from workbench.replay.tools import load_calls
from workbench.replay.voice import replay_voice
from workbench.scoring.base import score_run
from workbench.scoring.tools import args_match, args_match_share
from workbench.strategies.registry import build
from workbench.testing.worlds import fake_speech_stack, make_dataset, scripted_stack, voice_dataset
from workbench.workflows import arun, load_run
from workbench.workflows.suite import Suite, VoiceOptions

AGENT = '''
import asyncio
from livekit.agents import Agent, function_tool


class BookingAgent(Agent):
    def __init__(self, **kw):
        super().__init__(instructions="You book appointments.", **kw)

    @function_tool
    async def book(self, day: str, time: str = "9am") -> str:
        """Book an appointment."""
        return f"real: booked {day} at {time}"

    @function_tool
    async def cancel(self, booking_id: str) -> str:
        """Cancel a booking."""
        raise RuntimeError(f"calendar down for {booking_id}")

    @function_tool
    async def slow(self) -> str:
        """Never answers in time."""
        await asyncio.sleep(30)
        return "never"


def build(**kw):
    return BookingAgent(**kw)
'''

TURNS: list[dict[str, Any]] = [
    {  # two real tools in one step: one returns, one raises
        "user": "book monday and cancel b1",
        "expect_tools": [
            {"name": "book", "args": {"day": "monday"}},
            {"name": "cancel", "args": {"booking_id": "b1"}, "match": "exact"},
        ],
    },
    {  # book is mocked from the dataset; the model asks for the wrong day
        "user": "book wednesday",
        "expect_tools": [{"name": "book", "args": {"day": "wednesday"}}],
        "tool_results": {"book": {"ok": True, "slot": "tue 9am"}},
    },
    {"user": "wait for it", "expect_tools": []},  # no tool expected; the one called hangs
]

SCRIPTS = [
    Script(tool_calls=[ToolCall("book", {"day": "monday", "time": "10am"}), ToolCall("cancel", {"booking_id": "b1"})]),
    Script(text="Booked monday; the cancel failed."),
    Script(tool_calls=[ToolCall("book", {"day": "tuesday"})]),
    Script(text="Booked."),
    Script(tool_calls=[ToolCall("slow", {})]),
    Script(text="Sorry, that took too long."),
]


def agent_factory(tmp_path: Path) -> AgentFactory:
    path = tmp_path / "booking_agent.py"
    path.write_text(AGENT)
    return AgentFactory(use=f"{path}:build")


async def replay_booking(tmp_path: Path) -> tuple[list[dict[str, Any]], list[Any]]:
    conv = Conversation.model_validate({"id": "c0", "turns": TURNS})
    rows: list[dict[str, Any]] = []
    async with ScriptedEndpoint() as ep:
        ep.push(*SCRIPTS)
        stack = scripted_stack(ep, tmp_path)
        await replay_text(
            stack,
            build("plain", stack),
            conv,
            emit=rows.append,
            agent_factory=agent_factory(tmp_path),
            turn_timeout_s=10,
            tool_timeout_s=0.5,
        )
        requests = ep.chat_requests
    return rows, requests


async def test_text_mode_records_every_call_mocks_the_dataset_results_and_goes_on_after_errors(
    tmp_path: Path,
) -> None:
    rows, requests = await replay_booking(tmp_path)
    assert [r["answer"] for r in rows] == ["Booked monday; the cancel failed.", "Booked.", "Sorry, that took too long."]
    assert all(not r.get("error_kind") for r in rows)
    calls = [load_calls(r["tool_calls"]) for r in rows]
    assert [r["tool_names"] for r in rows] == [["book", "cancel"], ["book"], ["slow"]]
    assert [r["tool_errors"] for r in rows] == [1, 0, 1]

    book, cancel = calls[0]
    assert [book["order"], cancel["order"]] == [0, 1]
    assert book["arguments"] == {"day": "monday", "time": "10am"}  # parsed JSON, not text
    assert book["output"] == "real: booked monday at 10am" and book["error"] is None and not book["mocked"]
    assert cancel["error"] == "calendar down for b1"  # the exception's own message
    assert cancel["output"] == "An internal error occurred"  # what LiveKit told the model
    for c in (book, cancel):
        assert 0 <= c["started_s"] <= c["ended_s"] < 10

    (mocked,) = calls[1]
    assert mocked["mocked"] and json.loads(mocked["output"]) == {"ok": True, "slot": "tue 9am"}
    tool_msgs = [m for m in requests[3].messages if m.get("role") == "tool"]
    assert json.loads(tool_msgs[-1]["content"]) == {"ok": True, "slot": "tue 9am"}  # the model read the mock
    assert "real: booked tuesday" not in json.dumps([r.messages for r in requests])

    (slow,) = calls[2]
    assert slow["error"] == "timeout" and 0.4 < slow["ended_s"] - slow["started_s"] < 2.0
    assert "did not answer within 0.5 s" in slow["output"]

    # the dataset's expectations travel with the row
    assert load_calls(rows[0]["expected_tools"])[1] == {
        "name": "cancel",
        "args": {"booking_id": "b1"},
        "match": "exact",
    }
    assert load_calls(rows[2]["expected_tools"]) == []

    # scored: the wrong day scores lower, a call where none was expected scores 0; gates read the metric names
    df = typed_frame([{**r, "strategy": "plain", "mode": "text", "voice": "", "repetition": 0} for r in rows])
    scored = score_run(df, ["tool_call_accuracy", "tool_args_match"])
    assert scored["tool_call_accuracy"].tolist() == [1.0, 0.0, 0.0]
    assert scored["tool_args_match"].tolist()[:2] == [1.0, 0.0] and np.isnan(scored["tool_args_match"].iloc[2])
    assert metric("tool_call_accuracy").direction == "higher" and metric("tool_errors").direction == "lower"
    suite = Suite(gates=[{"metric": "tool_call_accuracy", "min": 0.3}, {"metric": "tool_args_match", "min": 0.5}])
    results = evaluate_gates(scored, {}, suite)
    assert [(r.metric, r.passed, r.value) for r in results] == [
        ("tool_call_accuracy", True, pytest.approx(1 / 3)),
        ("tool_args_match", True, 0.5),
    ]
    strict = Suite(gates=[{"metric": "tool_call_accuracy", "min": 0.9}])
    assert not evaluate_gates(scored, {}, strict)[0].passed


def test_argument_match_is_subset_or_exact_and_each_call_answers_one_expectation() -> None:
    assert args_match({"day": "monday", "time": "9am"}, {"day": "monday"}, "subset")
    assert not args_match({"day": "monday", "time": "9am"}, {"day": "monday"}, "exact")
    assert args_match({"n": 2}, {"n": 2.0}, "exact") and not args_match("not json", {}, "subset")
    calls = [{"name": "book", "arguments": {"day": "tuesday"}}, {"name": "book", "arguments": {"day": "monday"}}]
    expected = [{"name": "book", "args": {"day": "monday"}}, {"name": "book", "args": {"day": "monday"}}]
    assert args_match_share(calls, expected) == 0.5  # the monday call answers one expectation, not both
    assert args_match_share([], expected) == 0.0


def test_scorers_skip_a_run_without_expectations_and_say_why() -> None:
    df = typed_frame([{"conversation_id": "c", "turn_index": 0, "answer": "x", "tool_calls": "[]"}])
    scored = score_run(df, ["tool_call_accuracy", "tool_args_match"])
    assert "tool_call_accuracy" not in scored.columns
    outcomes = {o["name"]: o for o in scored.attrs["scoring"]["scorers"]}
    assert outcomes["tool_call_accuracy"]["status"] == "skipped"
    assert "expect_tools" in outcomes["tool_args_match"]["reason"]


def test_dataset_tool_fields_are_validated_with_line_and_field() -> None:
    good = {"id": "a", "turns": [{"user": "hi", "expect_tools": [{"name": "book"}], "tool_results": {"book": "ok"}}]}
    bad = {
        "id": "b",
        "turns": [
            {"user": "hi", "tool_results": {"book": None}},
            {
                "user": "hi",
                "expect_tools": [{"name": "bo ok", "match": "fuzzy", "argz": {}}],
                "tool_results": {"a b": 1},
            },
        ],
    }
    convs, problems = parse_conversations("\n".join(json.dumps(x) for x in (good, bad)).encode())
    assert [c.id for c in convs] == ["a"]
    turn = convs[0].turns[0]
    assert turn.expect_tools[0].match == "subset" and turn.expect_tools[0].args == {}
    where = {(p.line, p.field) for p in problems}
    assert {
        (2, "turns[1].expect_tools[0].name"),
        (2, "turns[1].expect_tools[0].match"),
        (2, "turns[1].expect_tools[0].argz"),
        (2, "turns[1].tool_results.a b"),
        (2, "turns[0].tool_results"),
    } <= where, problems


async def test_voice_mode_records_tool_calls_too(tmp_path: Path) -> None:
    ds = voice_dataset(tmp_path / "ds", turns=2)
    lines = json.loads((ds / "conversations.jsonl").read_text())
    lines["turns"][0].update(expect_tools=[{"name": "book", "args": {"day": "monday"}}])
    lines["turns"][1].update(tool_results={"book": "mocked slot"})
    (ds / "conversations.jsonl").write_text(json.dumps(lines) + "\n")
    dataset = load_dataset(ds, strict=True)
    stt = FixedDelaySTT(delay_s=0.01, texts=["question 0", "question 1"])
    rows: list[dict[str, Any]] = []
    with ScriptedEndpoint() as ep:
        ep.push(
            Script(tool_calls=[ToolCall("book", {"day": "monday"})]),
            Script(text="Booked."),
            Script(tool_calls=[ToolCall("book", {"day": "friday"})]),
            Script(text="Booked again."),
        )
        stack = fake_speech_stack(ep, tmp_path, stt)
        await replay_voice(
            stack,
            build("plain", stack),
            dataset.conversations[0],
            dataset=dataset,
            variant="piper",
            emit=rows.append,
            agent_factory=agent_factory(tmp_path),
            options=VoiceOptions(realtime=False, turn_timeout_s=10),
        )
    assert [r["answer"] for r in rows] == ["Booked.", "Booked again."], [(r["error_kind"], r["error"]) for r in rows]
    first, second = (load_calls(r["tool_calls"]) for r in rows)
    assert [(c["name"], c["arguments"], c["output"], c["mocked"]) for c in first + second] == [
        ("book", {"day": "monday"}, "real: booked monday at 9am", False),
        ("book", {"day": "friday"}, "mocked slot", True),
    ]
    scored = score_run(pd.DataFrame(rows), ["tool_call_accuracy"])
    assert scored["tool_call_accuracy"].iloc[0] == 1.0 and np.isnan(scored["tool_call_accuracy"].iloc[1])


async def test_a_stored_run_keeps_the_tool_columns_through_the_journal_and_parquet(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "ds", conversations=1, turns=2)
    conv = json.loads((ds / "conversations.jsonl").read_text())
    conv["turns"][0]["expect_tools"] = [{"name": "book", "args": {"day": "monday", "n": 2}}]
    (ds / "conversations.jsonl").write_text(json.dumps(conv) + "\n")
    async with ScriptedEndpoint() as ep:
        res = await arun(
            Suite(dataset=ds), runs_dir=tmp_path / "runs", stack=scripted_stack(ep, tmp_path), progress=False
        )
    df = load_run(res.path).sort_values("turn_index")  # compacted to Parquet
    assert [load_calls(v) for v in df["tool_calls"]] == [[], []]  # the default agent has no tools
    assert df["tool_errors"].tolist() == [0, 0] and [list(v) for v in df["tool_names"]] == [[], []]
    assert load_calls(df["expected_tools"].iloc[0]) == [
        {"name": "book", "args": {"day": "monday", "n": 2}, "match": "subset"}
    ]
    assert load_calls(df["expected_tools"].iloc[1]) is None
    scored = score_run(df, ["tool_call_accuracy"])
    assert scored["tool_call_accuracy"].iloc[0] == 0.0  # expected a call, none made
