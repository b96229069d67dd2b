"""AG2 strategies: one streaming ``ag2.Agent``, and a small team of them (gather or low-latency).

AG2 1.x (the ``ag2`` package, the "Autogen2" of the DianaChat guide) runs each agent turn on an event
stream: a streaming OpenAI client publishes every token as a ``ModelMessageChunk`` on it, and these
strategies subscribe to those events and pass the text on as it arrives. They reach the same
OpenAI-compatible endpoint as ``plain`` through the stack's pooled ``openai.AsyncOpenAI`` and send the same
request parameters, so a side-by-side comparison measures what AG2 itself adds.

Every turn runs on a fresh ``MemoryStream`` seeded with the LiveKit session's (already trimmed) history:
the session is the single source of truth and AG2 keeps no memory between turns or concurrent sessions.
The ``ag2.Agent`` objects themselves hold no conversation state, so one per role serves every turn.

Tools: the agents get no tools from the LiveKit session (``turn.tools`` is not passed). AG2 would execute
them inside its own loop, outside the session's function-call handling, and the embedded SmolLM2 has no
tool calling; a turn that needs the session's tools belongs to ``plain``.

Cancellation: each AG2 run happens in its own task; closing our generator cancels it, which interrupts
the HTTP read wherever it is, and the client closes the response at once so the server stops generating.
AG2 logs nothing when a run is cancelled (checked on 1.2.1), so unlike the AutoGen module no log filter is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import openai
from ag2 import Agent, MemoryStream
from ag2.config.config import ModelProvider
from ag2.config.openai.openai_client import CreateOptions, OpenAIClient
from ag2.context import ConversationContext
from ag2.events import BaseEvent, ModelMessage, ModelMessageChunk, ModelRequest, ModelResponse, TextInput
from autogen_core.models import UserMessage
from livekit.agents import llm
from livekit.agents.llm import ChatContext
from openai import AsyncStream
from openai.types.chat import ChatCompletionChunk
from pydantic import Field

from workbench.models import ModelStack, ResolvedEndpoint
from workbench.strategies.agents import (
    CONTINUE_ROLE,
    EDITOR_ROLE,
    LEAD_IN_ROLE,
    ROLES,
    _with_role,
    first_sentence,
    skip_repeat,
    to_autogen,
)
from workbench.strategies.base import Turn, error_kind
from workbench.strategies.bridge import stream_from_task
from workbench.strategies.pooled import PooledClients, PooledStrategy
from workbench.strategies.registry import register

_on_accepted: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "ag2_on_accepted", default=None
)
"""Called when a chat request made in this context has its response headers, i.e. the server has queued it."""

# -- model clients ----------------------------------------------------------------------------------------


class PooledAG2Client(OpenAIClient):
    """AG2's OpenAI chat-completions client on the stack's pooled ``openai.AsyncOpenAI``.

    AG2's ``OpenAIConfig`` takes only an httpx client and builds a new ``AsyncOpenAI`` (with the SDK's
    retries by default) for every turn, so this subclass sets the stack's client instead: shared pool, no
    retries (the strategy's fallback decides). It also closes the response whichever await a cancellation
    interrupts, not only the HTTP read, so a barge-in stops the upstream generation promptly, and it tells
    ``low_latency`` when the server has taken a request. This relies on ``OpenAIClient``'s ``_client``,
    ``_create_options`` and ``_process_stream`` (ag2 1.2.1; the unit tests fail if they change).
    """

    def __init__(self, pool: openai.AsyncOpenAI, options: CreateOptions) -> None:
        # no super().__init__(): it would build a private AsyncOpenAI with its own pool
        self.pool = pool
        self._client = pool
        self._create_options = options

    async def _process_stream(
        self, response_stream: AsyncStream[ChatCompletionChunk], context: ConversationContext
    ) -> ModelResponse:
        if (accepted := _on_accepted.get()) is not None:
            accepted()
        try:
            return await OpenAIClient._process_stream(self, response_stream, context)
        finally:
            await response_stream.close()  # releases the connection; the server sees the disconnect


@dataclass(frozen=True)
class PooledModelConfig:
    """AG2's ``ModelConfig`` protocol around one prebuilt client (it keeps no per-conversation state)."""

    client: PooledAG2Client

    @property
    def provider(self) -> ModelProvider:
        return ModelProvider.OPENAI

    @property
    def model(self) -> str:
        return str(self.client._create_options["model"])

    def copy(self) -> PooledModelConfig:
        return self

    def create(self) -> PooledAG2Client:
        return self.client


def create_options(endpoint: ResolvedEndpoint, max_tokens: int) -> CreateOptions:
    """The request parameters ``plain`` sends (``ModelStack.llm``), so both sides ask the server the same."""
    c = endpoint.config
    options = CreateOptions(model=endpoint.model, stream=True, stream_options={"include_usage": True},
                            temperature=c.temperature, max_completion_tokens=max_tokens)  # fmt: skip
    if c.seed is not None:
        options["seed"] = c.seed
    if c.kind == "local":  # llama.cpp's server ignores max_completion_tokens: without this, answers are unbounded
        options["max_tokens"] = max_tokens
    return options


class AG2Clients(PooledClients[PooledModelConfig]):
    """AG2 model configs for one endpoint on the stack's pooled HTTP client (:mod:`.pooled`)."""

    framework = "ag2"

    def wrap(self, pool: Any, max_tokens: int) -> PooledModelConfig:
        return PooledModelConfig(PooledAG2Client(pool, create_options(self.endpoint, max_tokens)))

    def pool_of(self, wrapper: PooledModelConfig) -> Any:
        return wrapper.client.pool


# -- LiveKit chat context -> AG2 events -------------------------------------------------------------------


@dataclass
class AG2Conversation:
    """A turn's chat context as AG2 sees it: instructions, the earlier events, and the request to answer."""

    instructions: str
    history: list[BaseEvent]
    request: ModelRequest

    @property
    def events(self) -> list[BaseEvent]:
        return [*self.history, self.request]


def to_ag2(chat_ctx: ChatContext) -> AG2Conversation:
    """Convert a LiveKit chat context with the same rules as the AutoGen strategies (``to_autogen``).

    The caller's last message is the request that starts the AG2 turn; a context that does not end with
    one (a greeting asked for by instructions alone) gets an empty request, since AG2 needs one to run.
    """
    conv = to_autogen(chat_ctx)
    events: list[BaseEvent] = [
        ModelRequest([TextInput(str(m.content))]) if isinstance(m, UserMessage)
        else ModelResponse(ModelMessage(str(m.content)))
        for m in conv.messages
    ]  # fmt: skip
    last = events[-1] if events else None
    request = events.pop() if isinstance(last, ModelRequest) else ModelRequest([TextInput("")])
    return AG2Conversation(conv.instructions, events, request)


def stream_reply(
    agent: Agent, config: PooledModelConfig, events: Sequence[BaseEvent], instructions: str
) -> AsyncIterator[str]:
    """Run one AG2 agent turn on ``events`` (the last one starts it) and yield its tokens as they arrive;
    closing the stream cancels the run's task, which closes the HTTP response."""

    async def produce(emit: Callable[[str], None]) -> None:
        stream = MemoryStream()

        async def on_chunk(event: ModelMessageChunk) -> None:
            emit(event.content)

        stream.where(ModelMessageChunk).subscribe(on_chunk)
        await agent.resume(*events, stream=stream, config=config, prompt=[instructions] if instructions else ())

    return stream_from_task(produce, name=f"ag2-{agent.name}")


# -- strategies ---------------------------------------------------------------------------------------------


@register
class AG2Strategy(PooledStrategy):
    """One streaming AG2 agent (ag2.Agent) on the plain endpoint; no tools from the session."""

    kind = "ag2"
    clients_type = AG2Clients

    def __init__(self, config: PooledStrategy.Config | None = None, *, stack: ModelStack | None = None) -> None:
        super().__init__(config, stack=stack)
        self.agent = Agent("assistant")  # stateless between turns: the model config comes with each run

    async def answer(self, turn: Turn, conv: AG2Conversation) -> AsyncIterator[str]:
        config = self.clients.get(self.config.max_tokens)
        async for token in stream_reply(self.agent, config, conv.events, conv.instructions):
            yield token

    async def generate(self, turn: Turn) -> AsyncIterator[str | llm.ChatChunk]:
        await self.ready()
        async for token in self.answer(turn, to_ag2(turn.chat_ctx)):
            yield token


@register
class AG2TeamStrategy(AG2Strategy):
    """A team of AG2 agents (researcher, optional planner, voice editor), gather or low-latency.

    ``gather`` is the naive baseline: the helpers run (concurrently) to completion, then the voice editor
    answers with their notes as the messages after the caller's question; the caller hears nothing until
    every helper is done. A failed helper is recorded in the trace and the editor goes on without it.

    ``low_latency`` starts the voice editor at once and streams a short lead-in sentence written from the
    same instructions the helpers read; the helpers start as soon as the server has taken the lead-in's
    request (so a one-slot server such as llama.cpp serves the lead-in first). When the lead-in's first
    sentence is complete, the editor continues with the helpers' notes, waiting at most ``helper_wait_s``
    and otherwise using what they have streamed so far. Same prompts and timing rules as ``multi_agent``.
    """

    kind = "ag2_team"

    class Config(AG2Strategy.Config):
        coordination: Literal["gather", "low_latency"] = "low_latency"
        helpers: list[Literal["researcher", "planner"]] = Field(default_factory=lambda: ["researcher"], min_length=1)
        helper_max_tokens: int = 64
        lead_in_max_tokens: int = 32
        helper_wait_s: float = 2.0  # after the lead-in is written; its ~2-3 s of speech hide the wait

    config: Config

    def __init__(self, config: Config | None = None, *, stack: ModelStack | None = None) -> None:
        super().__init__(config, stack=stack)
        self.editor = Agent("editor")
        self.helpers = {role: Agent(role) for role in self.config.helpers}

    async def answer(self, turn: Turn, conv: AG2Conversation) -> AsyncIterator[str]:
        turn.trace.notes["coordination"] = self.config.coordination
        stream = self._gather(turn, conv) if self.config.coordination == "gather" else self._low_latency(turn, conv)
        async for token in stream:
            yield token

    def _start_helpers(self, conv: AG2Conversation, notes: dict[str, list[str]]) -> dict[str, asyncio.Task[None]]:
        config = self.clients.get(self.config.helper_max_tokens)
        tasks: dict[str, asyncio.Task[None]] = {}
        for role, agent in self.helpers.items():
            notes[role] = []
            replies = stream_reply(agent, config, conv.events, _with_role(conv.instructions, ROLES[role]))
            tasks[role] = asyncio.create_task(_collect(replies, notes[role]), name=f"ag2-helper-{role}")
        return tasks

    @staticmethod
    def _record_helpers(turn: Turn, tasks: dict[str, asyncio.Task[None]]) -> None:
        finished = [(n, t) for n, t in tasks.items() if t.done() and not t.cancelled()]
        errors = {n: error_kind(e) for n, t in finished if (e := t.exception()) is not None}
        if errors:  # a failed helper leaves what it wrote; the spoken answer goes on without the rest
            turn.trace.notes["helper_errors"] = errors

    async def _gather(self, turn: Turn, conv: AG2Conversation) -> AsyncIterator[str]:
        t0 = time.perf_counter()
        notes: dict[str, list[str]] = {}
        tasks = self._start_helpers(conv, notes)
        try:
            await asyncio.wait(tasks.values())
        finally:
            for t in tasks.values():
                t.cancel()
            await asyncio.wait(tasks.values())
        turn.trace.notes["helpers_s"] = round(time.perf_counter() - t0, 4)
        self._record_helpers(turn, tasks)
        written = [text for parts in notes.values() if (text := "".join(parts).strip())]
        # the notes are the messages after the caller's question, as EDITOR_ROLE tells the editor
        events = [*conv.events, *(ModelRequest([TextInput(text)]) for text in written)]
        config = self.clients.get(self.config.max_tokens)
        async for token in stream_reply(self.editor, config, events, _with_role(conv.instructions, EDITOR_ROLE)):
            yield token

    async def _low_latency(self, turn: Turn, conv: AG2Conversation) -> AsyncIterator[str]:
        t0 = time.perf_counter()
        lead_config = self.clients.get(self.config.lead_in_max_tokens)
        lead_stream = stream_reply(self.editor, lead_config, conv.events, _with_role(conv.instructions, LEAD_IN_ROLE))
        accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        hook = _on_accepted.set(lambda: accepted.done() or accepted.set_result(None))
        try:  # the task copies the context, so only the lead-in's request reports its acceptance
            first = asyncio.ensure_future(anext(lead_stream, None))
        finally:
            _on_accepted.reset(hook)
        notes: dict[str, list[str]] = {}
        tasks: dict[str, asyncio.Task[None]] = {}
        try:
            # the helpers go out once the server has queued the lead-in, so a one-slot server such as
            # llama.cpp serves the lead-in first whatever order the sockets would race in
            await asyncio.wait([first, accepted], return_when=asyncio.FIRST_COMPLETED)
            if first.done() and first.exception() is not None:
                first.result()  # the lead-in failed: the turn falls back, no helper work is started for it
            tasks = self._start_helpers(conv, notes)
            lead = ""
            async for piece in first_sentence(lead_stream, await first):
                lead += piece
                yield piece
            await lead_stream.aclose()  # a lead-in longer than one sentence is cut here
            turn.trace.notes["lead_in_s"] = round(time.perf_counter() - t0, 4)

            _done, pending = await asyncio.wait(tasks.values(), timeout=self.config.helper_wait_s)
            for t in pending:  # out of time: use what they wrote so far, free the server for the editor
                t.cancel()
            if pending:
                await asyncio.wait(pending)
            turn.trace.notes["helpers_partial"] = bool(pending)
            turn.trace.notes["helpers_s"] = round(time.perf_counter() - t0, 4)
            self._record_helpers(turn, tasks)
            gathered = "\n".join(f"{name}: {''.join(parts).strip()}" for name, parts in notes.items() if parts)
            role = CONTINUE_ROLE.format(lead=lead.strip(), notes=gathered or "- none")
            cont_config = self.clients.get(self.config.max_tokens)
            cont = stream_reply(self.editor, cont_config, conv.events, _with_role(conv.instructions, role))
            need_space = bool(lead) and not lead[-1].isspace()
            async for token in skip_repeat(cont, lead):
                if need_space:
                    token = token if token[:1].isspace() else " " + token
                    need_space = False
                yield token
        finally:
            first.cancel()
            await asyncio.wait([first])  # the generator is not running any more, so it can be closed
            await lead_stream.aclose()
            for t in tasks.values():
                t.cancel()
            if tasks:
                await asyncio.wait(tasks.values())


async def _collect(tokens: AsyncIterator[str], into: list[str]) -> None:
    """Stream a helper's notes into ``into`` so the editor can use partial work if time runs out."""
    async with contextlib.aclosing(tokens):  # type: ignore[type-var]
        async for token in tokens:
            into.append(token)


__all__ = [
    "AG2Clients",
    "AG2Conversation",
    "AG2Strategy",
    "AG2TeamStrategy",
    "PooledAG2Client",
    "PooledModelConfig",
    "create_options",
    "stream_reply",
    "to_ag2",
]
