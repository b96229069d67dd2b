"""Tool calls of a replayed turn: recorded from the session's events, mocked from the dataset, bounded in time.

One :class:`ToolRecorder` per session, text and voice mode alike. It listens to the session's
``tool_execution_updated`` events (a call started; it ended done, with an error, or cancelled: the
exception's own message) and ``function_tools_executed`` (each call with the output the model read),
so a tool that raises is a recorded call with its error, never the end of the run.

Every function tool of the agent runs through LiveKit's own session-scoped mocks
(:func:`livekit.agents.mock_tools`): a tool named in the turn's ``tool_results`` returns the
dataset's value instead of running; every other tool runs for real under ``timeout_s`` (LiveKit
has no tool timeout), and a tool past it ends with a ``ToolError`` the model reads and the record's
error ``"timeout"``. Mocks intercept execution only: the model sees the real tool schemas and
LiveKit still validates the arguments. A blocking (non-async) tool cannot be timed out.

The turn-table cells ``tool_calls`` and ``expected_tools`` are JSON text: Parquet would turn a list of
argument mappings into structs, filling absent keys with nulls and failing on mixed value types.
Read them with :func:`load_calls`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from livekit.agents import AgentSession, llm, mock_tools

from workbench.core.cells import as_text

log = logging.getLogger(__name__)

TIMEOUT = "timeout"
CANCELLED = "cancelled"


def timeout_message(name: str, timeout_s: float) -> str:
    """What the model reads when ``name`` ran past ``timeout_s`` (and how the recorder knows it timed out)."""
    return f"the tool {name} did not answer within {timeout_s:g} s"


def _arguments(raw: str | None) -> Any:
    """A call's arguments as parsed JSON (the raw text when it is not JSON)."""
    try:
        return json.loads(raw or "{}")
    except (TypeError, ValueError):
        return raw


def load_calls(cell: Any) -> list[dict[str, Any]] | None:
    """A ``tool_calls`` or ``expected_tools`` cell as a list of dicts; None when the cell is unset."""
    if isinstance(cell, list):
        return cell
    text = as_text(cell).strip()
    if text in ("", "None", "nan"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def expected_tools_cell(turn: Any) -> str | None:
    """The dataset turn's ``expect_tools`` as the ``expected_tools`` cell (None: no expectation)."""
    expected = getattr(turn, "expect_tools", None)
    if expected is None:
        return None
    return json.dumps([e.model_dump() for e in expected], ensure_ascii=False)


def mocked_result(value: Any) -> Callable[[], Any]:
    """A mock returning the dataset's value: a string as written, anything else as JSON."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    async def mocked() -> str:
        return text

    return mocked


def bounded(name: str, tool: Any, timeout_s: float | None) -> Callable[..., Any]:
    """The real ``tool`` under a timeout; same signature, so LiveKit passes it the same arguments."""

    async def call(*args: Any, **kwargs: Any) -> Any:
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                out = tool(*args, **kwargs)
                return await out if inspect.isawaitable(out) else out
        except TimeoutError as e:
            if deadline.expired():
                raise llm.ToolError(timeout_message(name, timeout_s or 0.0)) from e
            raise  # the tool's own TimeoutError: an ordinary failure of the tool

    call.__signature__ = inspect.signature(tool)  # type: ignore[attr-defined]
    return call


class ToolRecorder:
    """Records one session's tool calls turn by turn and installs the turn's mocks (see the module doc)."""

    def __init__(self, session: AgentSession, agent: Any, *, timeout_s: float | None = None) -> None:
        self.session = session
        self.agent = agent
        self.timeout_s = timeout_s
        self._t0 = time.time()
        self._calls: dict[str, dict[str, Any]] = {}
        self._mocked: set[str] = set()
        session.on("tool_execution_updated", self._on_update)
        session.on("function_tools_executed", self._on_executed)

    def start_turn(self, tool_results: Mapping[str, Any] | None = None) -> None:
        """Forget the last turn's calls, time from now, and mock the tools the dataset answers for this turn."""
        self._t0 = time.time()
        self._calls = {}
        self._mocked = set(tool_results or {})
        agent = self._current_agent()
        tools = llm.ToolContext([*agent.tools, *self.session.tools]).function_tools
        if not tools and not tool_results:  # the usual agent without tools: nothing to wrap, every turn
            return
        mocks: dict[str, Callable[..., Any]] = {
            name: bounded(name, tool, self.timeout_s) for name, tool in tools.items()
        }
        for name, value in (tool_results or {}).items():
            if name not in tools:
                log.warning("tool_results names %r, which the agent does not have (it has: %s)", name, sorted(tools))
            mocks[name] = mocked_result(value)
        mock_tools(type(agent), mocks, session=self.session)

    def _current_agent(self) -> Any:
        try:
            return self.session.current_agent
        except RuntimeError:  # not started yet
            return self.agent

    def calls(self) -> list[dict[str, Any]]:
        """This turn's calls in the order they started, as JSON-able dicts."""
        ordered = sorted(self._calls.values(), key=lambda c: (c["started_s"], c["_seen"]))
        out = []
        for n, c in enumerate(ordered):
            rec = {k: v for k, v in c.items() if not k.startswith("_")}
            rec["order"] = n
            out.append(rec)
        return out

    def columns(self) -> dict[str, Any]:
        """The turn-table cells of this turn's calls."""
        calls = self.calls()
        return {
            "tool_calls": json.dumps(calls, ensure_ascii=False, default=str),
            "tool_names": [c["name"] for c in calls],
            "tool_errors": sum(1 for c in calls if c["error"] is not None),
        }

    def close(self) -> None:
        self.session.off("tool_execution_updated", self._on_update)
        self.session.off("function_tools_executed", self._on_executed)

    # -- events ---------------------------------------------------------------------------------
    def _since(self, wall: float) -> float:
        return round(wall - self._t0, 4)

    def _record(self, call: llm.FunctionCall, started: float) -> dict[str, Any]:
        rec = self._calls.get(call.call_id)
        if rec is None:
            rec = self._calls[call.call_id] = {
                "order": None,
                "name": call.name,
                "call_id": call.call_id,
                "arguments": _arguments(call.arguments),
                "output": None,
                "error": None,
                "mocked": call.name in self._mocked,
                "started_s": self._since(started),
                "ended_s": None,
                "_seen": len(self._calls),
            }
        else:
            rec["arguments"] = _arguments(call.arguments)  # LiveKit writes repaired arguments back as canonical JSON
        return rec

    def _on_update(self, ev: Any) -> None:
        update = ev.update
        if update.type == "tool_call_started":
            self._record(update.function_call, ev.created_at)
        elif update.type == "tool_call_ended":
            rec = self._calls.get(update.call_id)
            if rec is None:
                return  # a call of an earlier turn ending late
            rec["ended_s"] = self._since(ev.created_at)
            if update.status == "cancelled":
                rec["error"] = CANCELLED
            elif update.status == "error":
                message = update.message or "error"
                timed_out = self.timeout_s is not None and message == timeout_message(rec["name"], self.timeout_s)
                rec["error"] = TIMEOUT if timed_out else message

    def _on_executed(self, ev: Any) -> None:
        for call, out in ev.zipped():
            rec = self._record(call, call.created_at)
            rec["output"] = out.output
            if out.is_error and rec["error"] is None:
                rec["error"] = out.output  # no tool ran (unknown tool, arguments that do not parse or validate)
            if rec["ended_s"] is None:
                rec["ended_s"] = self._since(out.created_at)
