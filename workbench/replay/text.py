"""Text mode: a conversation replayed turn by turn through a room-less ``AgentSession``.

The strategy is the session's LLM and the session carries the history, exactly as in a call;
per turn we read the strategy's :class:`TurnTrace` (timing, retrieval, faults) by user message id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from livekit.agents import llm

from workbench.models import ModelStack
from workbench.pipeline import build_agent, build_session
from workbench.pipeline.agents import AgentFactory, build_user_agent
from workbench.replay.tools import ToolRecorder, expected_tools_cell
from workbench.strategies.base import Strategy, TurnTrace, count_tokens, error_kind, last_user_message


def dataset_row(conv: Any, turn_index: int) -> dict[str, Any]:
    """The dataset's side of a turn row."""
    t = conv.turns[turn_index]
    return {
        "conversation_id": conv.id,
        "turn_index": turn_index,
        "tags": list(conv.tags or []),
        "user_text": t.user,
        "reference": t.reference,
        "reference_contexts": list(t.contexts or []),
        "facts": list(t.facts or []),
        "expected_tools": expected_tools_cell(t),
    }


def trace_columns(trace: TurnTrace | None, prompt_text: Callable[[], str], answer: str) -> dict[str, Any]:
    """The strategy's side of a turn row; tokens from reported usage when present, else counted here.

    ``prompt_text`` is called only when the endpoint reported no usage (building it walks the history).
    """
    if trace is None:
        return {"error_kind": "no_llm_call", "error": "the session produced no LLM call for this turn"}
    usage = trace.notes.get("usage")
    if usage and usage.get("completion_tokens"):
        prompt_t, completion_t, source = usage.get("prompt_tokens"), usage.get("completion_tokens"), "usage"
    else:
        # what the model read: instructions, history, the turn, and any retrieved passages
        prompt_t = count_tokens(prompt_text()) + sum(count_tokens(p.text) for p in trace.contexts)
        completion_t, source = count_tokens(answer), "local"
    return {
        "contexts": [p.text for p in trace.contexts],
        "context_sources": [p.source for p in trace.contexts],
        "context_scores": [float(p.score) for p in trace.contexts],
        "llm_ttfc_s": trace.first_chunk_s,
        "llm_total_s": trace.total_s,
        "prompt_tokens": prompt_t,
        "completion_tokens": completion_t,
        "tokens_source": source,
        "error_kind": trace.error_kind,
        "error": trace.error,
        "fallback": trace.fallback,
        "partial": trace.partial,
        "recovery_s": trace.notes.get("recovery_s"),
        "history_dropped": trace.history_dropped,
        "tools_not_passed": trace.notes.get("tools_not_passed"),
    }


def history_from_rows(rows: list[dict[str, Any]]) -> llm.ChatContext:
    """Rebuild a conversation's history from stored rows, so a resumed conversation continues, not restarts."""
    ctx = llm.ChatContext()
    for r in sorted(rows, key=lambda r: r["turn_index"]):
        ctx.add_message(role="user", content=r["user_text"])
        if r.get("answer"):
            ctx.add_message(role="assistant", content=r["answer"])
    return ctx


def _prompt_text(chat_ctx: llm.ChatContext) -> str:
    return "\n".join(i.text_content or "" for i in chat_ctx.items if isinstance(i, llm.ChatMessage))


async def replay_text(
    stack: ModelStack,
    strategy: Strategy,
    conv: Any,
    *,
    emit: Callable[[dict[str, Any]], None],
    start_turn: int = 0,
    history: llm.ChatContext | None = None,
    instructions: str | None = None,
    speech_text: dict[str, Any] | None = None,
    agent_factory: AgentFactory | None = None,
    turn_timeout_s: float = 60.0,
    tool_timeout_s: float | None = None,
) -> None:
    """Replay ``conv`` from ``start_turn``; ``emit`` receives one row per finished turn.

    ``tool_timeout_s`` bounds each tool call (None: half of ``turn_timeout_s``, so the model can still answer).
    """
    agent = (
        await build_user_agent(agent_factory, chat_ctx=history)
        if agent_factory is not None
        else build_agent(**({"instructions": instructions} if instructions else {}), chat_ctx=history)
    )
    session = build_session(stack, strategy, mode="text", speech_text=speech_text)
    await session.start(agent)
    tools = ToolRecorder(session, agent, timeout_s=turn_timeout_s / 2 if tool_timeout_s is None else tool_timeout_s)
    try:
        for i in range(start_turn, len(conv.turns)):
            row = dataset_row(conv, i)
            row["started_at"] = datetime.now(UTC).isoformat()
            t0 = time.perf_counter()
            answer, trace, failure = "", None, None
            history = agent.chat_ctx  # before this turn: what the model reads besides the turn itself

            def prompt(history: llm.ChatContext = history, user: str = conv.turns[i].user) -> str:
                return f"{agent.instructions}\n{_prompt_text(history)}\n{user}"

            tools.start_turn(getattr(conv.turns[i], "tool_results", None))
            try:
                async with asyncio.timeout(turn_timeout_s):  # no extra task per turn, unlike wait_for
                    result = await session.run(user_input=conv.turns[i].user)
                answer = " ".join(
                    ev.item.text_content or ""
                    for ev in result.events
                    if ev.type == "message" and ev.item.role == "assistant"
                ).strip()
            except Exception as e:  # the turn fails loudly in its row; the conversation goes on
                failure = e
            user_msg = last_user_message(agent.chat_ctx)
            trace = strategy.trace_for(user_msg.id) if user_msg else None
            row.update(trace_columns(trace, prompt, answer))
            row["answer"] = answer
            row.update(tools.columns())
            if failure is not None and not row.get("error_kind"):
                row["error_kind"], row["error"] = error_kind(failure), str(failure)[:500]
            row.setdefault("llm_total_s", time.perf_counter() - t0)
            emit(row)
    finally:
        tools.close()
        await session.aclose()
