"""Timing helpers shared by the strategy benchmarks (importable: ``benchmarks/`` is on ``sys.path``)."""

from __future__ import annotations

import time
from typing import Any

from livekit.agents import llm


def chat_ctx(instructions: str, question: str) -> llm.ChatContext:
    c = llm.ChatContext()
    c.add_message(role="system", content=instructions)
    c.add_message(role="user", content=question)
    return c


async def first_chunk(strategy: Any, ctx: llm.ChatContext) -> tuple[float, Any]:
    """Seconds from ``chat()`` to the first text chunk (the rest is drained, as a voice agent would) and the
    turn's trace, which must show no error."""
    t0 = time.perf_counter()
    first = None
    async with strategy.chat(chat_ctx=ctx) as stream:
        async for ch in stream:
            if first is None and ch.delta and ch.delta.content:
                first = time.perf_counter() - t0
    assert first is not None, f"{strategy.kind}: no text streamed"
    trace = strategy.trace_for(stream.chat_ctx.items[-1].id)
    assert trace is not None and trace.error_kind is None, trace
    return first, trace
