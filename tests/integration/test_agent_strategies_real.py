"""AutoGen strategies answering real room-less AgentSession turns on the embedded SmolLM2 server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from livekit.agents import Agent, AgentSession

from workbench.strategies.registry import build

pytestmark = pytest.mark.integration

INSTRUCTIONS = (
    "You are Diana, the front desk of Diana Health and Wellness Clinic. Answer in one short sentence. "
    "Main Street is open Monday to Friday from 8 am to 6 pm and Saturday from 9 am to 1 pm."
)
# small answers keep each turn to a second or two on 2 cores; the generous timeouts are for a busy machine
# (these tests check behaviour, latency is measured in benchmarks/)
KNOWLEDGE = Path(__file__).resolve().parents[2] / "datasets" / "dianachat_demo" / "knowledge"
SMALL = {"max_tokens": 24, "first_chunk_timeout_s": 90.0, "chunk_timeout_s": 60.0}
TEAM = {**SMALL, "helper_max_tokens": 24, "lead_in_max_tokens": 20}


async def session_turn(strategy: Any, question: str) -> tuple[str, Any]:
    """One real AgentSession turn: the assistant's text and the strategy's trace for it."""
    async with AgentSession(llm=strategy) as session:
        await session.start(Agent(instructions=INSTRUCTIONS))
        result = await session.run(user_input=question)
        item = result.expect.next_event(type="message").event().item
        assert item.role == "assistant"
        text = item.text_content or ""
        user = next(i for i in session.history.items if getattr(i, "role", None) == "user")
        return text, strategy.trace_for(user.id)


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "autogen", **SMALL},
        {"kind": "multi_agent", "coordination": "gather", **TEAM},
        {"kind": "multi_agent", "coordination": "low_latency", **TEAM},
    ],
    ids=["autogen", "multi_agent-gather", "multi_agent-low_latency"],
)
async def test_agent_strategies_answer_a_real_session_turn(stack, spec: dict[str, Any]) -> None:
    strategy = build(spec, stack)
    try:
        text, trace = await session_turn(strategy, "When are you open on Saturday?")
    finally:
        await strategy.aclose()
    assert len(text.split()) >= 2, f"no real answer: {text!r}"
    assert trace is not None and trace.error_kind is None and trace.fallback is None, trace
    assert text != strategy.options.apology
    assert trace.first_chunk_s is not None and trace.first_chunk_s < trace.total_s
    if spec["kind"] == "multi_agent":
        assert trace.notes["coordination"] == spec["coordination"]
        if spec["coordination"] == "low_latency":
            assert trace.notes["lead_in_s"] <= trace.notes["helpers_s"]


@pytest.mark.parametrize("team", [False, True], ids=["agent", "team"])
async def test_hybrid_answers_with_retrieved_passages(stack, team: bool) -> None:
    strategy = build({"kind": "hybrid", "team": team, "top_k": 2, "knowledge": str(KNOWLEDGE), **TEAM}, stack)
    try:
        text, trace = await session_turn(strategy, "What are the opening hours of the Lakeside location?")
    finally:
        await strategy.aclose()
    assert len(text.split()) >= 2, f"no real answer: {text!r}"
    assert trace is not None and trace.error_kind is None and trace.fallback is None, trace
    assert len(trace.contexts) == 2
    assert any("lakeside" in p.source.lower() for p in trace.contexts), [p.source for p in trace.contexts]
    assert all(p.text.strip() for p in trace.contexts)
