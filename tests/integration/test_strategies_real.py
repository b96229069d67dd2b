"""plain, rag, rag_middleware and extractive answering real room-less AgentSession turns on the embedded model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from livekit.agents import Agent, AgentSession

from workbench.strategies.registry import build

pytestmark = pytest.mark.integration

KNOWLEDGE = Path(__file__).resolve().parents[2] / "datasets" / "dianachat_demo" / "knowledge"
PATIENT = {"first_chunk_timeout_s": 90.0, "chunk_timeout_s": 60.0}  # a busy machine is slow, not broken


async def two_turns(strategy: Any) -> list[tuple[str, Any]]:
    """A question and a follow-up through one session: the answers and the strategy's traces."""
    out = []
    async with AgentSession(llm=strategy) as session:
        await session.start(Agent(instructions="You are Diana, a clinic's front desk. Answer in one short sentence."))
        for question in ("How much is a 60 minute massage?", "And a 90 minute one?"):
            result = await session.run(user_input=question)
            item = result.expect.next_event(type="message").event().item
            user = [i for i in session.history.items if getattr(i, "role", None) == "user"][-1]
            out.append((item.text_content or "", strategy.trace_for(user.id)))
    return out


@pytest.mark.parametrize("kind", ["plain", "rag", "rag_middleware", "extractive"])
async def test_strategy_answers_real_session_turns(stack, kind: str) -> None:
    strategy = build({"kind": kind, **PATIENT} | ({} if kind == "plain" else {"knowledge": str(KNOWLEDGE)}), stack)
    try:
        turns = await two_turns(strategy)
    finally:
        await strategy.aclose()
    for text, trace in turns:
        assert text.strip(), f"{kind} gave an empty answer"
        assert trace is not None and trace.error_kind is None, trace
        assert trace.first_chunk_s is not None and trace.first_chunk_s <= trace.total_s
    if kind != "plain":
        sources = [p.source for p in turns[0][1].contexts]
        assert "knowledge/massage-therapy.md" in sources, sources
    if kind == "extractive":  # no generation: the passage itself, with its price
        assert "$" in turns[0][0] and "massage" in turns[0][0].lower()
