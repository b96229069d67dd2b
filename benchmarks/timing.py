"""Timing helpers shared by the strategy benchmarks (importable as ``timing``: pytest puts a test file's
directory on ``sys.path``)."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
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


def side_by_side(
    benchmark: Any, loop: asyncio.AbstractEventLoop, runs: dict[str, Callable[[], Any]], rounds: int
) -> dict[str, list[float]]:
    """Run every entry once per round, alternating the order, after one warm-up round."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for name in names:  # warm-up: lazy imports, first connections, tokenizer
        loop.run_until_complete(runs[name]())
    n = iter(range(10**6))

    def one_round() -> None:
        order = names if next(n) % 2 == 0 else names[::-1]
        for name in order:
            times[name].append(loop.run_until_complete(runs[name]()))

    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    for name, ts in times.items():
        benchmark.extra_info[f"{name}_ttfc_median_ms"] = round(statistics.median(ts) * 1000, 1)
    return times


def paired_overhead_ms(a: list[float], b: list[float]) -> float:
    """Median of the per-round differences ``b - a`` (pairs share the round's load)."""
    return statistics.median(y - x for x, y in zip(a, b, strict=True)) * 1000
