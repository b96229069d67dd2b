"""How a team of agents (researcher, optional planner, voice editor) answers one turn, whatever framework runs them.

The AutoGen (``multi_agent``) and AG2 (``ag2_team``) strategies share their YAML keys (:class:`TeamConfig`),
their prompts and the ``low_latency`` coordination (:class:`Team`). The framework glue supplies one function,
:data:`Ask`: a member's streamed reply to the turn's messages under a given system text. Who speaks, when the
helpers start, how long the editor waits for them and what the trace records are decided here, once.

``low_latency`` starts the voice editor at once and streams a short lead-in sentence written from the same
instructions (and retrieved context) the helpers read; the helpers go out as soon as the server has taken the
lead-in's request (:func:`report_accepted`), so a one-slot server such as llama.cpp serves the lead-in first.
When the lead-in's first sentence is complete, the editor continues with the helpers' notes, waiting at most
``helper_wait_s`` and otherwise using what they have streamed so far. First audio then costs one model call's
first token, not the whole chain; the price is a second editor call.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any, Literal

from pydantic import Field

from workbench.strategies.base import error_kind
from workbench.strategies.pooled import PooledStrategy

RESEARCHER_ROLE = (
    "You are now the researcher behind the front desk: do not talk to the caller. From the information above, "
    "write at most three short notes with the facts needed to answer the caller's last message, one per line, "
    "each starting with '- '. If nothing above is relevant, write '- no information'."
)
PLANNER_ROLE = (
    "You are now the planner behind the front desk: do not talk to the caller. In one short line, say what the "
    "caller needs next: an answer, booking an appointment, a transfer to staff, or emergency help."
)
EDITOR_ROLE = (
    "You speak to the caller on the phone. The messages after the caller's question are your colleagues' notes. "
    "Using them and the information above, reply in one or two short spoken sentences: plain words, no lists, "
    "no markup, and never invent facts."
)
LEAD_IN_ROLE = (
    "You speak to the caller on the phone. Start your reply now with one short sentence that answers directly "
    "from the information above, or says what you are checking. Plain words, no lists, no markup."
)
CONTINUE_ROLE = (
    'You speak to the caller on the phone and have already said: "{lead}"\n'
    "Your colleagues' notes:\n{notes}\n"
    "Continue the reply with one short sentence that adds what the notes show and you have not said yet. "
    "Do not repeat what you said. Plain words, no lists, no markup, never invent facts."
)
ROLES = {"researcher": RESEARCHER_ROLE, "planner": PLANNER_ROLE}
_SENTENCE_END_IN = re.compile(r"[.!?]\s")

Ask = Callable[[str, str, int | None], AsyncGenerator[str, None]]
"""``ask(member, system, max_tokens)``: the member's reply to the turn's messages, streamed as it arrives.

``member`` is ``"editor"`` or a helper's role; closing the returned stream must cancel the member's run."""


class TeamConfig(PooledStrategy.Config):
    """The YAML keys of a team strategy."""

    coordination: Literal["gather", "low_latency"] = "low_latency"
    helpers: list[Literal["researcher", "planner"]] = Field(default_factory=lambda: ["researcher"], min_length=1)
    helper_max_tokens: int = 64
    lead_in_max_tokens: int = 32
    helper_wait_s: float = 2.0  # after the lead-in is written; its ~2-3 s of speech hide the wait


def with_role(instructions: str, role: str) -> str:
    return f"{instructions}\n\n{role}" if instructions else role


# -- request acceptance -------------------------------------------------------------------------------------

_on_accepted: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("on_accepted", default=None)


def report_accepted() -> None:
    """Called by a framework's model client when a request has its response headers (the server has queued it)."""
    if (callback := _on_accepted.get()) is not None:
        callback()


@contextlib.contextmanager
def _reporting_to(callback: Callable[[], None]) -> Iterator[None]:
    """Requests made by tasks created inside this block call ``callback`` once accepted (tasks copy the context)."""
    token = _on_accepted.set(callback)
    try:
        yield
    finally:
        _on_accepted.reset(token)


# -- the team -----------------------------------------------------------------------------------------------


class _Helpers:
    """The helpers' runs, each streaming its notes into a list so that partial work survives a cancel."""

    def __init__(self, team: Team) -> None:
        self.parts: dict[str, list[str]] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        system, max_tokens = team.instructions, team.config.helper_max_tokens
        for role in team.config.helpers:
            self.parts[role] = []
            tokens = team.ask(role, with_role(system, ROLES[role]), max_tokens)
            self.tasks[role] = asyncio.create_task(_collect(tokens, self.parts[role]), name=f"{team.name}-{role}")

    async def wait(self, timeout: float | None) -> bool:
        """Wait for every helper, at most ``timeout``; cancel the rest. True if any had to be cancelled."""
        _done, pending = await asyncio.wait(self.tasks.values(), timeout=timeout)
        await self.cancel()  # out of time: keep what they wrote so far, free the server for the editor
        return bool(pending)

    async def cancel(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks.values())
        for task in self.tasks.values():  # a failure is read here even when no one records it (a closed turn)
            if not task.cancelled():
                task.exception()

    def written(self) -> dict[str, str]:
        """Each helper's notes, for those that wrote anything, in the configured order."""
        return {role: "".join(parts).strip() for role, parts in self.parts.items() if parts}

    def errors(self) -> dict[str, str]:
        finished = [(n, t) for n, t in self.tasks.items() if t.done() and not t.cancelled()]
        return {n: error_kind(e) for n, t in finished if (e := t.exception()) is not None}


async def _collect(tokens: AsyncGenerator[str, None], into: list[str]) -> None:
    async with contextlib.aclosing(tokens):
        async for token in tokens:
            into.append(token)


class Team:
    """One turn of a team: :meth:`low_latency`, or :meth:`helper_notes` for a framework's own ``gather``.

    ``notes`` is the turn trace's notes: the timings and helper failures land there.
    """

    def __init__(self, config: TeamConfig, instructions: str, ask: Ask, notes: dict[str, Any], *, name: str) -> None:
        self.config = config
        self.instructions = instructions
        self.ask = ask
        self.notes = notes
        self.name = name  # prefixes the helpers' task names

    def run(self, gather: Callable[[], AsyncIterator[str]]) -> AsyncIterator[str]:
        """The configured coordination: the framework's ``gather`` or :meth:`low_latency`."""
        self.notes["coordination"] = self.config.coordination
        return gather() if self.config.coordination == "gather" else self.low_latency()

    def _record_errors(self, helpers: _Helpers) -> None:
        if errors := helpers.errors():  # a failed helper leaves what it wrote; the answer goes on without the rest
            self.notes["helper_errors"] = errors

    async def helper_notes(self) -> list[str]:
        """Run every helper to completion, concurrently; the notes they wrote, in the configured order."""
        t0 = time.perf_counter()
        helpers = _Helpers(self)
        try:
            await helpers.wait(None)
        finally:
            await helpers.cancel()
        self.notes["helpers_s"] = round(time.perf_counter() - t0, 4)
        self._record_errors(helpers)
        return [text for text in helpers.written().values() if text]

    async def low_latency(self) -> AsyncIterator[str]:
        """The lead-in's first sentence at once, then a continuation written with the helpers' notes."""
        c, t0 = self.config, time.perf_counter()
        lead_stream = self.ask("editor", with_role(self.instructions, LEAD_IN_ROLE), c.lead_in_max_tokens)
        accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with _reporting_to(lambda: accepted.done() or accepted.set_result(None)):
            first = asyncio.ensure_future(anext(lead_stream, None))  # only the lead-in's request reports to it
        helpers: _Helpers | None = None
        continuation: AsyncGenerator[str, None] | None = None
        try:
            # the helpers go out once the server has queued the lead-in, so a one-slot server such as
            # llama.cpp serves the lead-in first whatever order the sockets would race in
            await asyncio.wait([first, accepted], return_when=asyncio.FIRST_COMPLETED)
            if first.done() and first.exception() is not None:
                first.result()  # the lead-in failed: the turn falls back, no helper work is started for it
            helpers = _Helpers(self)
            lead = ""
            async for piece in first_sentence(lead_stream, await first):
                lead += piece
                yield piece
            await lead_stream.aclose()  # a lead-in longer than one sentence is cut here
            self.notes["lead_in_s"] = round(time.perf_counter() - t0, 4)

            self.notes["helpers_partial"] = await helpers.wait(c.helper_wait_s)
            self.notes["helpers_s"] = round(time.perf_counter() - t0, 4)
            self._record_errors(helpers)
            gathered = "\n".join(f"{role}: {text}" for role, text in helpers.written().items())
            role = CONTINUE_ROLE.format(lead=lead.strip(), notes=gathered or "- none")
            continuation = self.ask("editor", with_role(self.instructions, role), c.max_tokens)
            async for token in _after(lead, skip_repeat(continuation, lead)):
                yield token
        finally:
            if continuation is not None:
                await continuation.aclose()  # cancels its run; the text filters around it hold nothing
            first.cancel()
            await asyncio.wait([first])  # the generator is not running any more, so it can be closed
            await lead_stream.aclose()
            if helpers is not None:
                await helpers.cancel()


# -- text ---------------------------------------------------------------------------------------------------


async def first_sentence(tokens: AsyncIterator[str], first: str | None, min_chars: int = 12) -> AsyncIterator[str]:
    """Pass tokens on at once until the first sentence (of at least ``min_chars``) has ended.

    A token ending in ``.``, ``!`` or ``?`` ends the sentence only if the next one starts with a space (so
    ``9.30`` or ``Dr.`` followed by a name are not cut); that decision never holds text back.
    """
    said, token, maybe_end = 0, first, False
    while token is not None:
        if maybe_end and token[:1].isspace():
            return
        end = _SENTENCE_END_IN.search(token)
        if end is not None and said + end.start() >= min_chars:
            yield token[: end.start() + 1]
            return
        said += len(token)
        yield token
        maybe_end = token.endswith((".", "!", "?")) and said >= min_chars
        token = await anext(tokens, None)


async def skip_repeat(tokens: AsyncIterator[str], said: str) -> AsyncIterator[str]:
    """Drop a continuation's opening when it repeats what was already said (small models often restart).

    Holds back only while the continuation is still a prefix of ``said``: at most one sentence, and a
    continuation that starts differently is released after its first token.
    """
    target, held = said.strip(), ""
    async for token in tokens:
        if not target:
            yield token
            continue
        held += token
        head = held.lstrip()
        if target.startswith(head):
            continue  # may still be a repeat
        out = head[len(target) :] if head.startswith(target) else held
        target = ""
        if out:
            yield out


async def _after(lead: str, tokens: AsyncIterator[str]) -> AsyncIterator[str]:
    """``tokens`` as the continuation of ``lead``: a space between them unless one of them has it."""
    need_space = bool(lead) and not lead[-1].isspace()
    async for token in tokens:
        if need_space:
            token = token if token[:1].isspace() else " " + token
            need_space = False
        yield token


__all__ = [
    "CONTINUE_ROLE",
    "EDITOR_ROLE",
    "LEAD_IN_ROLE",
    "ROLES",
    "Ask",
    "Team",
    "TeamConfig",
    "first_sentence",
    "report_accepted",
    "skip_repeat",
    "with_role",
]
