"""AutoGen strategies: one AssistantAgent, a small team of agents, and either of them fed with RAG context.

They reach the same OpenAI-compatible endpoint as ``plain`` (and through the stack's pooled HTTP client),
so a side-by-side comparison measures what AutoGen itself adds. Every turn builds fresh agents whose model
context is the LiveKit session's (already trimmed) history: the session is the single source of truth, and
AutoGen keeps no memory of its own between turns or between concurrent sessions.

Each AutoGen run happens in its own task that pushes streamed tokens into a queue; closing our generator
cancels the run's ``CancellationToken`` and the task, which cancels the in-flight HTTP read and closes the
response (so a llama.cpp server stops generating as soon as the caller barges in).

Tools: the agents get no tools from the LiveKit session (``turn.tools`` is not passed): AutoGen would run
them in its own loop, outside the session's function-call handling. A turn whose session has tools says so
at run time: ``tools_not_passed`` (the tool names) in its trace notes, and one warning per strategy.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import ModelClientStreamingChunkEvent
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import CancellationToken
from autogen_core.model_context import UnboundedChatCompletionContext
from autogen_core.models import AssistantMessage, LLMMessage, ModelFamily, ModelInfo, UserMessage
from autogen_ext.models.openai import BaseOpenAIChatCompletionClient
from autogen_ext.models.openai import _model_info as openai_model_info
from livekit.agents import llm
from livekit.agents.llm import ChatContext

from workbench.models import ModelStack
from workbench.strategies.base import StrategyOptions, StrategyTurn
from workbench.strategies.bridge import stream_from_task, to_transcript
from workbench.strategies.pooled import PooledClients, PooledStrategy, note_tools_not_passed
from workbench.strategies.rag import RetrievalStrategy, spec_from_keys
from workbench.strategies.registry import register
from workbench.strategies.teams import EDITOR_ROLE, ROLES, Ask, Team, TeamConfig, report_accepted, with_role

log = logging.getLogger(__name__)


# -- logging ----------------------------------------------------------------------------------------------


class _DropCancelled(logging.Filter):
    """AutoGen's runtime logs a full traceback when a team run is cancelled: on every barge-in, so not an error."""

    logger = logging.getLogger("autogen_core")

    def __init__(self) -> None:
        super().__init__()
        self.holders = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, asyncio.CancelledError)

    def hold(self) -> None:
        """On AutoGen's logger while at least one strategy holds it (its runtime may log after a run is closed)."""
        self.holders += 1
        self.logger.addFilter(self)

    def release(self) -> None:
        self.holders -= 1
        if self.holders <= 0:
            self.holders = 0
            self.logger.removeFilter(self)


_DROP_CANCELLED = _DropCancelled()

# -- model clients ----------------------------------------------------------------------------------------

LOCAL_MODEL_INFO: ModelInfo = {
    "vision": False,
    "function_calling": False,
    "json_output": False,
    "family": ModelFamily.UNKNOWN,
    "structured_output": False,
    "multiple_system_messages": False,
}


def model_info_for(model: str) -> ModelInfo:
    """AutoGen's own info for an OpenAI model name; a conservative text-only profile for anything else."""
    try:
        return openai_model_info.get_info(model)
    except (KeyError, ValueError):  # autogen-ext raises ValueError for a name it does not know
        return LOCAL_MODEL_INFO


class PooledOpenAIClient(BaseOpenAIChatCompletionClient):
    """AutoGen's OpenAI chat client on an ``openai.AsyncClient`` it may not own.

    Two differences from ``OpenAIChatCompletionClient``: it reuses a connection pool (the stack's, shared
    with ``plain``), and an abandoned stream closes its HTTP response at once instead of waiting for garbage
    collection, which is what makes barge-in stop the upstream generation promptly. The latter overrides
    autogen-ext's private ``_create_stream_chunks`` (checked on the pinned 0.7.5; the unit tests catch a change).
    """

    def __init__(
        self,
        client: Any,
        *,
        model: str,
        owns_client: bool = False,
        model_info: ModelInfo | None = None,
        **create_args: Any,
    ) -> None:
        args = {"model": model, **{k: v for k, v in create_args.items() if v is not None}}
        super().__init__(
            client, create_args=args, model_info=model_info or model_info_for(model), include_name_in_message=False
        )
        self._owns_client = owns_client

    async def _create_stream_chunks(
        self,
        tool_params: Any,
        oai_messages: Any,
        create_args: dict[str, Any],
        cancellation_token: CancellationToken | None,
    ) -> AsyncIterator[Any]:
        kwargs: dict[str, Any] = {"messages": oai_messages, "stream": True, **create_args}
        if tool_params:
            kwargs["tools"] = tool_params
        try:
            stream_future = asyncio.ensure_future(self._client.chat.completions.create(**kwargs))
            if cancellation_token is not None:
                cancellation_token.link_future(stream_future)
            stream = await stream_future
        except Exception as e:
            _record_failure(e)
            raise
        report_accepted()
        try:
            while True:
                chunk_future = asyncio.ensure_future(anext(stream))
                if cancellation_token is not None:
                    cancellation_token.link_future(chunk_future)
                try:
                    chunk = await chunk_future
                except StopAsyncIteration:
                    break
                except Exception as e:
                    _record_failure(e)
                    raise
                yield chunk
        finally:
            await stream.close()  # releases the connection; the server sees the disconnect

    async def close(self) -> None:
        if self._owns_client:
            await self._client.close()


_failures: contextvars.ContextVar[list[Exception] | None] = contextvars.ContextVar("autogen_failures", default=None)


def _record_failure(e: Exception) -> None:
    """Keep a model call's exception for :func:`stream_tokens`: an AutoGen team reports a member's failure as a
    ``RuntimeError`` holding only its text, so the error kind (``stream_cut``, ``http_500``) would be lost."""
    if (failures := _failures.get()) is not None:
        failures.append(e)


class ModelClients(PooledClients[PooledOpenAIClient]):
    """AutoGen model clients for one endpoint on the stack's pooled HTTP client (:mod:`.pooled`).

    Concurrent sessions share one client: AutoGen's client keeps no per-conversation state, only usage counters.
    """

    framework = "autogen"

    def wrap(self, pool: Any, max_tokens: int) -> PooledOpenAIClient:
        c = self.endpoint.config
        extra = {"seed": c.seed} if c.seed is not None else {}
        return PooledOpenAIClient(
            pool, model=self.endpoint.model, temperature=c.temperature, max_tokens=max_tokens, **extra
        )

    def pool_of(self, wrapper: PooledOpenAIClient) -> Any:
        return wrapper._client


# -- LiveKit chat context -> AutoGen messages -------------------------------------------------------------


@dataclass
class AutoGenChat:
    """A turn's chat context as AutoGen sees it: the instructions and the messages after them."""

    instructions: str
    messages: list[LLMMessage]


def to_autogen(chat_ctx: ChatContext) -> AutoGenChat:
    """Convert a LiveKit chat context by the rules of :func:`.bridge.to_transcript`."""
    t = to_transcript(chat_ctx)
    messages: list[LLMMessage] = [
        UserMessage(content=text, source="user")
        if role == "user"
        else AssistantMessage(content=text, source="assistant")
        for role, text in t.messages
    ]
    return AutoGenChat(t.instructions, messages)


def _agent(name: str, client: PooledOpenAIClient, system: str, history: Sequence[LLMMessage]) -> AssistantAgent:
    return AssistantAgent(
        name,
        client,
        system_message=system or None,
        model_context=UnboundedChatCompletionContext(initial_messages=list(history)),
        model_client_stream=True,
        description=f"the {name} of a clinic's voice front desk",
    )


def stream_tokens(runnable: Any, *, task: Any = None, speaker: str | None = None) -> AsyncGenerator[str, None]:
    """Run an AutoGen agent or team and yield ``speaker``'s streamed tokens as they arrive; closing the
    stream cancels the run through its ``CancellationToken`` (AutoGen's own way, honoured by teams) and task."""
    token = CancellationToken()

    async def produce(emit: Callable[[str], None]) -> None:
        failures: list[Exception] = []
        _failures.set(failures)  # in this run's task: the team runtime's tasks, created under it, share the list
        try:
            async for event in runnable.run_stream(task=task, cancellation_token=token, output_task_messages=False):
                if isinstance(event, ModelClientStreamingChunkEvent) and (speaker is None or event.source == speaker):
                    emit(event.content)
        except Exception as e:
            if failures and e not in failures and e.__cause__ is None:
                raise e from failures[-1]  # a team's RuntimeError: the model call's own error is its cause
            raise

    return stream_from_task(produce, name=f"autogen-{speaker or 'run'}", on_cancel=token.cancel)


# -- strategies ---------------------------------------------------------------------------------------------


@register
class AutoGenStrategy(PooledStrategy):
    """One AutoGen AssistantAgent on the plain endpoint, streaming tokens as the model produces them."""

    kind = "autogen"
    clients_type = ModelClients

    def __init__(self, config: StrategyOptions | None = None, *, stack: ModelStack | None = None) -> None:
        super().__init__(config, stack=stack)
        _DROP_CANCELLED.hold()
        self._release_filter = weakref.finalize(self, _DROP_CANCELLED.release)  # also if never closed

    async def answer(self, turn: StrategyTurn, chat: AutoGenChat) -> AsyncIterator[str]:
        """The spoken answer to ``chat`` (the turn's context, with any retrieved passages in it)."""
        agent = _agent("assistant", self.clients.get(self.config.max_tokens), chat.instructions, chat.messages)
        async for token in stream_tokens(agent, speaker="assistant"):
            yield token

    async def generate(self, turn: StrategyTurn) -> AsyncIterator[str | llm.ChatChunk]:
        note_tools_not_passed(self, turn, "AutoGen")
        await self.ready()
        async for token in self.answer(turn, to_autogen(turn.chat_ctx)):
            yield token

    async def aclose(self) -> None:
        self._release_filter()  # once: a finalizer runs at most once
        await super().aclose()


@register
class MultiAgentStrategy(AutoGenStrategy):
    """A team of AutoGen agents (researcher, optional planner, voice editor), gather or low-latency.

    ``gather`` is the naive baseline: a ``RoundRobinGroupChat`` runs every helper to completion, then the
    voice editor combines their notes in a final call; only that call is streamed, so the caller hears
    nothing until all the helpers are done. ``low_latency`` is :class:`.teams.Team`'s, with AutoGen agents.
    """

    kind = "multi_agent"

    class Config(TeamConfig):
        """``coordination``, ``helpers``, their budgets: :class:`.teams.TeamConfig`."""

    config: Config

    def _ask(self, chat: AutoGenChat) -> Ask:
        def ask(member: str, system: str, max_tokens: int | None) -> AsyncGenerator[str, None]:
            agent = _agent(member, self.clients.get(max_tokens), system, chat.messages)
            return stream_tokens(agent, speaker=member)

        return ask

    def answer(self, turn: StrategyTurn, chat: AutoGenChat) -> AsyncIterator[str]:
        team = Team(self.config, chat.instructions, self._ask(chat), turn.trace.notes, name="autogen")
        return team.run(lambda: self._gather(chat))

    async def _gather(self, chat: AutoGenChat) -> AsyncIterator[str]:
        # the team is started with the caller's last message as its task, so the members' own contexts hold
        # only what came before it (otherwise every member would read the question twice)
        task: str | None = None
        if chat.messages and isinstance(chat.messages[-1], UserMessage):
            task = str(chat.messages[-1].content)
            chat = AutoGenChat(chat.instructions, chat.messages[:-1])
        helper_client = self.clients.get(self.config.helper_max_tokens)
        helpers = [
            _agent(r, helper_client, with_role(chat.instructions, ROLES[r]), chat.messages) for r in self.config.helpers
        ]
        editor_client = self.clients.get(self.config.max_tokens)
        editor = _agent("editor", editor_client, with_role(chat.instructions, EDITOR_ROLE), chat.messages)
        participants = [*helpers, editor]
        team = RoundRobinGroupChat(participants, max_turns=len(participants))  # type: ignore[arg-type]
        async for token in stream_tokens(team, task=task, speaker="editor"):
            yield token


@register
class HybridStrategy(RetrievalStrategy):
    """RAG context in the instructions of the AutoGen agent (``team: false``) or the AutoGen team (``team: true``)."""

    kind = "hybrid"

    class Config(RetrievalStrategy.Config, MultiAgentStrategy.Config):
        team: bool = False

    config: Config

    def inner_spec(self) -> dict[str, Any]:
        return spec_from_keys(MultiAgentStrategy if self.config.team else AutoGenStrategy, self.config)


__all__ = [
    "AutoGenChat",
    "AutoGenStrategy",
    "HybridStrategy",
    "ModelClients",
    "MultiAgentStrategy",
    "PooledOpenAIClient",
    "model_info_for",
    "stream_tokens",
    "to_autogen",
]
