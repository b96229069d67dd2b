"""Helpers shared by the AutoGen and AG2 strategy tests (fixtures in conftest.py): a chat context, one turn,
the team's scripted members."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from livekit.agents import llm

from workbench.faults.endpoint import RecordedRequest, Script, ScriptedEndpoint

INSTRUCTIONS = "You are Diana, the front desk of a clinic. Answer in one short sentence."
ANSWER = "Main Street opens at eight in the morning on weekdays."
NOTES = "- Main Street: 8 am to 6 pm on weekdays."
PLAN = "- an answer"
LEAD = "We open at eight."
MORE = "That is Monday to Friday, until six."


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


def system_text(req: RecordedRequest) -> str:
    msgs = req.messages
    return msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else ""


def request_for(endpoint: ScriptedEndpoint, marker: str) -> RecordedRequest:
    """The request whose system prompt contains ``marker`` (a member's role)."""
    return next(r for r in endpoint.chat_requests if marker in system_text(r))


def by_role(helper: Script, lead: Script, final: Script, editor: Script | None = None) -> Any:
    """Answers by role, recognised from the system prompt each member sends; anything else (plain) gets ANSWER.

    ``final`` answers the low-latency continuation, and the gather editor unless ``editor`` is given.
    """

    def pick(body: dict[str, Any]) -> Script:
        system = body["messages"][0]["content"]
        if "You are now the researcher" in system:
            return helper
        if "You are now the planner" in system:
            return Script(text=PLAN)
        if "Start your reply now" in system:
            return lead
        if "already said" in system:
            return final
        if "colleagues' notes" in system:  # the gather editor
            return editor or final
        return Script(text=ANSWER)

    return pick


def running_tasks(prefix: str) -> list[str]:
    """The names of the tasks still running whose name starts with ``prefix`` (a framework's runs)."""
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(prefix) and not t.done()]
