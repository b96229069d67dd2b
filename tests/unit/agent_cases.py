"""Helpers shared by the AutoGen and AG2 strategy tests (fixtures in conftest.py): a chat context, one turn."""

from __future__ import annotations

import time
from typing import Any

from livekit.agents import llm

INSTRUCTIONS = "You are Diana, the front desk of a clinic. Answer in one short sentence."
ANSWER = "Main Street opens at eight in the morning on weekdays."


def chat_ctx(*turns: tuple[str, str]) -> llm.ChatContext:
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content=INSTRUCTIONS)
    for role, text in turns:
        ctx.add_message(role=role, content=text)  # type: ignore[arg-type]
    return ctx


async def run_turn(strategy: Any, ctx: llm.ChatContext) -> tuple[str, list[tuple[float, str]]]:
    """The whole answer and each chunk's arrival time (perf_counter, comparable with the server's records)."""
    chunks: list[tuple[float, str]] = []
    async with strategy.chat(chat_ctx=ctx) as stream:
        async for ch in stream:
            if ch.delta and ch.delta.content:
                chunks.append((time.perf_counter(), ch.delta.content))
    return "".join(c for _, c in chunks), chunks
