"""The booking demo: Diana's tools over SQLite, a scripted run of a booking conversation, and the strategies'
tool handling (plain and rag pass the session's tools to the model; autogen and ag2 say they do not).

Everything runs against the scripted endpoint: no real model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import ToolError, llm
from typer.testing import CliRunner

from workbench.cli import app
from workbench.core.config import EndpointConfig, WorkbenchConfig
from workbench.faults.endpoint import Script, ScriptedEndpoint, ToolCall
from workbench.models import ModelStack
from workbench.pipeline.agents import AgentFactory, load_agent_factory
from workbench.replay.dataset import load_dataset
from workbench.replay.text import trace_columns
from workbench.replay.tools import load_calls
from workbench.strategies.base import Passage
from workbench.strategies.rag import RagStrategy
from workbench.strategies.registry import build
from workbench.testing.worlds import scripted_stack, sqlite_rows
from workbench.workflows import arun, load_run
from workbench.workflows.suite import Suite, load_suite

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "datasets" / "dianachat_demo" / "agent.py"
DATASET = ROOT / "datasets" / "dianachat_booking"
SEED_IDS = ["B-101", "B-102", "B-103"]


def build_agent(db: Path, **kw: Any) -> Any:
    return load_agent_factory(f"{AGENT}:build")(db=db, **kw)


async def test_tools_book_move_and_cancel_real_rows_and_refuse_what_the_policy_forbids(tmp_path: Path) -> None:
    db = tmp_path / "b.sqlite"
    a = build_agent(db)
    assert [r["id"] for r in sqlite_rows(db)] == SEED_IDS

    assert "B-104" in await a.book("Priya Shah", "main_street", "wednesday", "11")
    assert sqlite_rows(db, "SELECT * FROM bookings WHERE id = 'B-104'") == [
        {"id": "B-104", "name": "Priya Shah", "location": "main_street", "day": "wednesday", "time": "11:00"}
    ]
    assert "11:00" not in await a.check_availability("main_street", "wednesday")
    assert "is free" in await a.check_availability("lakeside", "saturday", "11:00")
    await a.reschedule("B-101", "friday", "14:00")
    assert sqlite_rows(db, "SELECT day, time FROM bookings WHERE id = 'B-101'") == [{"day": "friday", "time": "14:00"}]
    await a.cancel("B-102")
    assert [r["id"] for r in sqlite_rows(db)] == ["B-101", "B-103", "B-104"]

    refused = {
        "already booked": a.book("Alex Kim", "main_street", "wednesday", "11:00"),  # Priya's slot
        "closed on Sundays": a.book("Alex Kim", "lakeside", "sunday", "10:00"),
        "outside opening hours": a.book("Alex Kim", "main_street", "friday", "19:00"),
        "on the hour": a.book("Alex Kim", "main_street", "friday", "10:30"),
        "no same-day bookings": a.book("Alex Kim", "main_street", "monday", "16:00"),
        "no same-day cancellations": a.cancel("B-103"),  # today's booking
        "no same-day changes": a.reschedule("B-103", "friday", "09:00"),
        "no booking": a.cancel("B-999"),
    }
    for message, call in refused.items():
        with pytest.raises(ToolError, match=message):
            await call
    assert [r["id"] for r in sqlite_rows(db)] == ["B-101", "B-103", "B-104"]  # nothing refused changed the store
    actions = [(r["conversation"], r["action"], r["booking_id"]) for r in sqlite_rows(db, "SELECT * FROM changes")]
    assert actions == [(1, "reset", None), (1, "book", "B-104"), (1, "reschedule", "B-101"), (1, "cancel", "B-102")]


async def test_each_conversation_starts_from_the_seed_and_a_stale_one_cannot_write(tmp_path: Path) -> None:
    db = tmp_path / "b.sqlite"
    first = build_agent(db)
    await first.cancel("B-101")
    second = build_agent(db)  # the next conversation: the harness builds the agent once per conversation
    assert [r["id"] for r in sqlite_rows(db)] == SEED_IDS
    assert "B-104" in await second.book("Jordan Lee", "lakeside", "saturday", "11:00")  # ids restart too
    with pytest.raises(RuntimeError, match="reset by another conversation"):
        await first.cancel("B-102")  # conversations sharing the file must run one at a time
    assert [r["conversation"] for r in sqlite_rows(db, "SELECT * FROM changes WHERE action = 'book'")] == [2]


def test_the_factory_takes_the_file_from_db_then_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DIANACHAT_BOOKING_DB", str(tmp_path / "env.sqlite"))
    build_agent(None)
    assert (tmp_path / "env.sqlite").is_file()
    ctx = llm.ChatContext()
    ctx.add_message(role="user", content="earlier")
    agent = build_agent(tmp_path / "arg.sqlite", chat_ctx=ctx)
    assert (tmp_path / "arg.sqlite").is_file() and "earlier" in [i.text_content for i in agent.chat_ctx.items]
    assert sorted(t.info.name for t in agent.tools) == ["book", "cancel", "check_availability", "reschedule"]


def test_the_dataset_validates_and_the_suite_loads() -> None:
    result = CliRunner().invoke(app, ["validate", str(DATASET)])
    assert result.exit_code == 0 and "8 conversations, 13 turns" in result.output, result.output
    data = load_dataset(DATASET, strict=True)
    assert len(data.conversations) == 8 and all(t.expect_tools is not None for c in data.conversations for t in c.turns)
    suite = load_suite(ROOT / "evals" / "booking.yaml")
    assert suite.agent is not None and suite.agent.args == {"db": "runs/booking-demo.sqlite"}
    assert list(suite.strategies) == ["plain", "rag", "autogen", "ag2"] and suite.concurrency == 1


async def test_a_scripted_booking_conversation_leaves_its_booking_in_the_store(tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    book = {"name": "Priya Shah", "location": "main_street", "day": "wednesday", "time": "11:00"}
    suite = Suite(
        dataset=DATASET,
        agent=AgentFactory(use=f"{AGENT}:build", args={"db": str(db)}),
        conversations={"ids": ["b002"]},
        concurrency=1,
    )
    async with ScriptedEndpoint() as ep:
        ep.push(Script(text="Hello."))  # the runner's unrecorded warm-up turn
        ep.push(Script(text="May I have your full name?"), Script(tool_calls=[ToolCall("book", book)]))
        ep.push(Script(text="You're booked, B-104."))
        res = await arun(suite, runs_dir=tmp_path / "runs", stack=scripted_stack(ep, tmp_path), progress=False)
        tools_sent = [t["function"]["name"] for t in ep.chat_requests[-1].body["tools"]]  # (the first: warm-up)
    assert sorted(tools_sent) == ["book", "cancel", "check_availability", "reschedule"]
    df = load_run(res.path).sort_values("turn_index")
    assert df["answer"].tolist() == ["May I have your full name?", "You're booked, B-104."]
    assert [list(n) for n in df["tool_names"]] == [[], ["book"]]
    (call,) = load_calls(df["tool_calls"].iloc[1])
    assert call["arguments"] == book and call["error"] is None and call["output"].startswith("Booked B-104")
    assert sqlite_rows(db, "SELECT * FROM bookings WHERE id = 'B-104'") == [{"id": "B-104", **book}]
    # the run's start check resets the store too
    assert [r["action"] for r in sqlite_rows(db, "SELECT * FROM changes")] == ["reset", "reset", "book"]


# -- strategies and the session's tools ---------------------------------------------------------------------------


@pytest.fixture
async def endpoint():
    async with ScriptedEndpoint(Script(text="We open at 8 am.")) as ep:
        yield ep


@pytest.fixture
def stack(endpoint: ScriptedEndpoint, tmp_path: Path):
    cfg = WorkbenchConfig(llm=EndpointConfig(kind="openai", base_url=endpoint.base_url, model="m"), state_dir=tmp_path)
    with ModelStack(cfg) as s:
        yield s


class FakeIndex:
    async def aretrieve(self, query: str, top_k: int = 3) -> list[Passage]:
        return [Passage("Main Street is open 8 am to 6 pm.", "knowledge/hours-main-street.md", 0.8)]


async def answer(strategy: Any, tools: list[Any]) -> tuple[str, Any]:
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content="You are Diana.")
    ctx.add_message(role="user", content="When do you open?")
    async with strategy.chat(chat_ctx=ctx, tools=tools) as stream:
        text = "".join([c.delta.content or "" async for c in stream if c.delta])
    return text, strategy.trace_for(ctx.items[-1].id)


async def test_plain_and_rag_pass_the_tools_to_the_model(endpoint, stack, tmp_path: Path) -> None:
    tools = build_agent(tmp_path / "b.sqlite").tools
    for strategy in (build("plain", stack), RagStrategy(RagStrategy.Config(top_k=1), stack=stack, index=FakeIndex())):
        text, trace = await answer(strategy, tools)
        sent = {t["function"]["name"] for t in endpoint.chat_requests[-1].body["tools"]}
        assert text == "We open at 8 am." and sent == {"book", "cancel", "check_availability", "reschedule"}
        assert "tools_not_passed" not in trace.notes
        await strategy.aclose()


@pytest.mark.parametrize("kind", ["autogen", "ag2"])
async def test_autogen_and_ag2_record_the_tools_they_do_not_pass(kind, endpoint, stack, tmp_path, caplog) -> None:
    tools = build_agent(tmp_path / "b.sqlite").tools
    strategy = build(kind, stack)
    with caplog.at_level(logging.WARNING, logger=f"workbench.strategies.{'agents' if kind == 'autogen' else kind}"):
        for _ in range(2):
            text, trace = await answer(strategy, tools)
            assert text == "We open at 8 am."
            assert trace.notes["tools_not_passed"] == ["book", "cancel", "check_availability", "reschedule"]
            assert "tools" not in endpoint.chat_requests[-1].body
            # and the turn table says so (replay's trace columns)
            assert trace_columns(trace, lambda: "", text)["tools_not_passed"] == trace.notes["tools_not_passed"]
        _, trace = await answer(strategy, [])
    assert "tools_not_passed" not in trace.notes  # no tools, nothing to say
    warnings = [r for r in caplog.records if "not passed" in r.getMessage()]
    assert len(warnings) == 1 and "check_availability" in warnings[0].getMessage()  # once per strategy
    await strategy.aclose()
