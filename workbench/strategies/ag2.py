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
tool calling; a turn that needs the session's tools belongs to ``plain``. A turn whose session has tools says
so at run time: ``tools_not_passed`` (the tool names) in its trace notes, and one warning per strategy.

Cancellation: each AG2 run happens in its own task; closing our generator cancels it, which interrupts
the HTTP read wherever it is, and the client closes the response at once so the server stops generating.
AG2 logs nothing when a run is cancelled (checked on 1.2.1), so unlike the AutoGen module no log filter is needed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import openai
from ag2 import Agent, MemoryStream
from ag2.config.config import ModelProvider
from ag2.config.openai.openai_client import CreateOptions, OpenAIClient
from ag2.context import ConversationContext
from ag2.events import BaseEvent, ModelMessage, ModelMessageChunk, ModelRequest, ModelResponse, TextInput
from livekit.agents import llm
from livekit.agents.llm import ChatContext
from openai import AsyncStream
from openai.types.chat import ChatCompletionChunk

from workbench.models import ModelStack, ResolvedEndpoint
from workbench.strategies.base import StrategyTurn
from workbench.strategies.bridge import stream_from_task, to_transcript
from workbench.strategies.pooled import PooledClients, PooledStrategy, note_tools_not_passed
from workbench.strategies.registry import register
from workbench.strategies.teams import EDITOR_ROLE, Ask, Team, TeamConfig, report_accepted, with_role

log = logging.getLogger(__name__)


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
        report_accepted()
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
    options = CreateOptions(
        model=endpoint.model,
        stream=True,
        stream_options={"include_usage": True},
        temperature=c.temperature,
        max_completion_tokens=max_tokens,
    )
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
class AG2Chat:
    """A turn's chat context as AG2 sees it: instructions, the earlier events, and the request to answer."""

    instructions: str
    history: list[BaseEvent]
    request: ModelRequest

    @property
    def events(self) -> list[BaseEvent]:
        return [*self.history, self.request]


def to_ag2(chat_ctx: ChatContext) -> AG2Chat:
    """Convert a LiveKit chat context by the rules of :func:`.bridge.to_transcript`.

    The caller's last message is the request that starts the AG2 turn; a context that does not end with
    one (a greeting asked for by instructions alone) gets an empty request, since AG2 needs one to run.
    """
    t = to_transcript(chat_ctx)
    events: list[BaseEvent] = [
        ModelRequest([TextInput(text)]) if role == "user" else ModelResponse(ModelMessage(text))
        for role, text in t.messages
    ]
    last = events[-1] if events else None
    request = events.pop() if isinstance(last, ModelRequest) else ModelRequest([TextInput("")])
    return AG2Chat(t.instructions, events, request)


def stream_reply(
    agent: Agent, config: PooledModelConfig, events: Sequence[BaseEvent], instructions: str
) -> AsyncGenerator[str, None]:
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

    async def answer(self, turn: StrategyTurn, chat: AG2Chat) -> AsyncIterator[str]:
        config = self.clients.get(self.config.max_tokens)
        async for token in stream_reply(self.agent, config, chat.events, chat.instructions):
            yield token

    async def generate(self, turn: StrategyTurn) -> AsyncIterator[str | llm.ChatChunk]:
        note_tools_not_passed(self, turn, "AG2")
        await self.ready()
        async for token in self.answer(turn, to_ag2(turn.chat_ctx)):
            yield token


@register
class AG2TeamStrategy(AG2Strategy):
    """A team of AG2 agents (researcher, optional planner, voice editor), gather or low-latency.

    ``gather`` is the naive baseline: the helpers run (concurrently) to completion, then the voice editor
    answers with their notes as the messages after the caller's question; the caller hears nothing until
    every helper is done. A failed helper is recorded in the trace and the editor goes on without it.
    ``low_latency`` is :class:`.teams.Team`'s, with AG2 agents: the same prompts and timing rules as
    ``multi_agent``.
    """

    kind = "ag2_team"

    class Config(TeamConfig):
        """``coordination``, ``helpers``, their budgets: :class:`.teams.TeamConfig`."""

    config: Config

    def __init__(self, config: Config | None = None, *, stack: ModelStack | None = None) -> None:
        super().__init__(config, stack=stack)
        self.editor = Agent("editor")
        self.helpers = {role: Agent(role) for role in self.config.helpers}

    def _ask(self, chat: AG2Chat) -> Ask:
        def ask(member: str, system: str, max_tokens: int | None) -> AsyncGenerator[str, None]:
            agent = self.editor if member == "editor" else self.helpers[member]
            return stream_reply(agent, self.clients.get(max_tokens), chat.events, system)

        return ask

    def answer(self, turn: StrategyTurn, chat: AG2Chat) -> AsyncIterator[str]:
        team = Team(self.config, chat.instructions, self._ask(chat), turn.trace.notes, name="ag2")
        return team.run(lambda: self._gather(team, chat))

    async def _gather(self, team: Team, chat: AG2Chat) -> AsyncIterator[str]:
        written = await team.helper_notes()
        # the notes are the messages after the caller's question, as EDITOR_ROLE tells the editor
        events = [*chat.events, *(ModelRequest([TextInput(text)]) for text in written)]
        config = self.clients.get(self.config.max_tokens)
        async for token in stream_reply(self.editor, config, events, with_role(chat.instructions, EDITOR_ROLE)):
            yield token


__all__ = [
    "AG2Chat",
    "AG2Clients",
    "AG2Strategy",
    "AG2TeamStrategy",
    "PooledAG2Client",
    "PooledModelConfig",
    "create_options",
    "stream_reply",
    "to_ag2",
]
