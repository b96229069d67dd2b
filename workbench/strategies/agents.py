"""AutoGen strategies: one AssistantAgent, a small team of agents, and either of them fed with RAG context.

They reach the same OpenAI-compatible endpoint as ``plain`` (and through the stack's pooled HTTP client),
so a side-by-side comparison measures what AutoGen itself adds. Every turn builds fresh agents whose model
context is the LiveKit session's (already trimmed) history: the session is the single source of truth, and
AutoGen keeps no memory of its own between turns or between concurrent sessions.

Each AutoGen run happens in its own task that pushes streamed tokens into a queue; closing our generator
cancels the run's ``CancellationToken`` and the task, which cancels the in-flight HTTP read and closes the
response (so a llama.cpp server stops generating as soon as the caller barges in).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import ModelClientStreamingChunkEvent
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import CancellationToken
from autogen_core.model_context import UnboundedChatCompletionContext
from autogen_core.models import AssistantMessage, LLMMessage, ModelFamily, ModelInfo, UserMessage
from autogen_ext.models.openai import BaseOpenAIChatCompletionClient
from autogen_ext.models.openai import _model_info as openai_model_info
from livekit.agents import llm
from livekit.agents.llm import ChatContext, ChatMessage
from pydantic import Field

from workbench.strategies.base import Turn, error_kind
from workbench.strategies.bridge import stream_from_task
from workbench.strategies.pooled import PooledClients, PooledStrategy
from workbench.strategies.rag import RetrievalStrategy, spec_from_keys
from workbench.strategies.registry import register


class _DropCancelled(logging.Filter):
    """AutoGen's runtime logs a full traceback when a team run is cancelled: on every barge-in, so not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, asyncio.CancelledError)


logging.getLogger("autogen_core").addFilter(_DropCancelled())

# -- model clients ----------------------------------------------------------------------------------------

_on_accepted: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("on_accepted", default=None)
"""Called when a chat request made in this context has its response headers, i.e. the server has queued it."""

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

    def __init__(self, client: Any, *, model: str, owns_client: bool = False, model_info: ModelInfo | None = None,
                 **create_args: Any) -> None:  # fmt: skip
        args = {"model": model, **{k: v for k, v in create_args.items() if v is not None}}
        super().__init__(client, create_args=args, model_info=model_info or model_info_for(model),
                         include_name_in_message=False)  # fmt: skip
        self._owns_client = owns_client

    async def _create_stream_chunks(self, tool_params: Any, oai_messages: Any, create_args: dict[str, Any],
                                    cancellation_token: CancellationToken | None) -> AsyncIterator[Any]:  # fmt: skip
        kwargs: dict[str, Any] = {"messages": oai_messages, "stream": True, **create_args}
        if tool_params:
            kwargs["tools"] = tool_params
        stream_future = asyncio.ensure_future(self._client.chat.completions.create(**kwargs))
        if cancellation_token is not None:
            cancellation_token.link_future(stream_future)
        stream = await stream_future
        if (accepted := _on_accepted.get()) is not None:
            accepted()
        try:
            while True:
                chunk_future = asyncio.ensure_future(anext(stream))
                if cancellation_token is not None:
                    cancellation_token.link_future(chunk_future)
                try:
                    chunk = await chunk_future
                except StopAsyncIteration:
                    break
                yield chunk
        finally:
            await stream.close()  # releases the connection; the server sees the disconnect

    async def close(self) -> None:
        if self._owns_client:
            await self._client.close()


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
class Conversation:
    """A turn's chat context as AutoGen sees it: the instructions and the messages after them."""

    instructions: str
    messages: list[LLMMessage]


def to_autogen(chat_ctx: ChatContext) -> Conversation:
    """Convert a LiveKit chat context; tool results become short assistant notes (the agents have no tools).

    System or developer messages after the first user turn are folded into the instructions, because many
    local chat templates reject a system message that is not the first.
    """
    system: list[str] = []
    messages: list[LLMMessage] = []
    for item in chat_ctx.items:
        if isinstance(item, ChatMessage):
            text = item.text_content or ""
            if item.role in ("system", "developer"):
                if text:
                    system.append(text)
            elif item.role == "user":
                messages.append(UserMessage(content=text, source="user"))
            elif item.role == "assistant" and text:
                messages.append(AssistantMessage(content=text, source="assistant"))
        elif item.type == "function_call_output":
            out = getattr(item, "output", "")
            messages.append(AssistantMessage(content=f"({item.name} returned: {out})", source="assistant"))
    return Conversation("\n\n".join(system), messages)


def _agent(name: str, client: PooledOpenAIClient, system: str, history: Sequence[LLMMessage]) -> AssistantAgent:
    return AssistantAgent(
        name,
        client,
        system_message=system or None,
        model_context=UnboundedChatCompletionContext(initial_messages=list(history)),
        model_client_stream=True,
        description=f"the {name} of a clinic's voice front desk",
    )


def stream_tokens(runnable: Any, *, task: Any = None, speaker: str | None = None) -> AsyncIterator[str]:
    """Run an AutoGen agent or team and yield ``speaker``'s streamed tokens as they arrive; closing the
    stream cancels the run through its ``CancellationToken`` (AutoGen's own way, honoured by teams) and task."""
    token = CancellationToken()

    async def produce(emit: Callable[[str], None]) -> None:
        async for event in runnable.run_stream(task=task, cancellation_token=token, output_task_messages=False):
            if isinstance(event, ModelClientStreamingChunkEvent) and (speaker is None or event.source == speaker):
                emit(event.content)

    return stream_from_task(produce, name=f"autogen-{speaker or 'run'}", on_cancel=token.cancel)


# -- strategies ---------------------------------------------------------------------------------------------


@register
class AutoGenStrategy(PooledStrategy):
    """One AutoGen AssistantAgent on the plain endpoint, streaming tokens as the model produces them."""

    kind = "autogen"
    clients_type = ModelClients

    async def answer(self, turn: Turn, conv: Conversation) -> AsyncIterator[str]:
        """The spoken answer to ``conv`` (the turn's context, with any retrieved passages in it)."""
        agent = _agent("assistant", self.clients.get(self.config.max_tokens), conv.instructions, conv.messages)
        async for token in stream_tokens(agent, speaker="assistant"):
            yield token

    async def generate(self, turn: Turn) -> AsyncIterator[str | llm.ChatChunk]:
        await self.ready()
        async for token in self.answer(turn, to_autogen(turn.chat_ctx)):
            yield token


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


def _with_role(instructions: str, role: str) -> str:
    return f"{instructions}\n\n{role}" if instructions else role


@register
class MultiAgentStrategy(AutoGenStrategy):
    """A team of AutoGen agents (researcher, optional planner, voice editor), gather or low-latency.

    ``gather`` is the naive baseline: a ``RoundRobinGroupChat`` runs every helper to completion, then the
    voice editor combines their notes in a final call; only that call is streamed, so the caller hears
    nothing until all the helpers are done.

    ``low_latency`` starts the voice editor at once and streams a short lead-in sentence written from the
    same instructions (and retrieved context) the helpers read, so it is as grounded as ``plain``; the
    helpers run in parallel as soon as the server has taken the lead-in's request. When the lead-in's
    first sentence is complete, the editor continues with the helpers' notes, waiting at most
    ``helper_wait_s`` and otherwise using the notes they have streamed so far (partial work). First audio
    then costs one model call's first token, not the whole chain; the price is a second editor call and,
    on a one-slot server such as llama.cpp, helpers that queue behind the lead-in (sent after it was
    queued, they cannot overtake it).
    """

    kind = "multi_agent"

    class Config(AutoGenStrategy.Config):
        coordination: Literal["gather", "low_latency"] = "low_latency"
        helpers: list[Literal["researcher", "planner"]] = Field(default_factory=lambda: ["researcher"], min_length=1)
        helper_max_tokens: int = 64
        lead_in_max_tokens: int = 32
        helper_wait_s: float = 2.0  # after the lead-in is written; its ~2-3 s of speech hide the wait

    config: Config

    def _helpers(self, conv: Conversation) -> list[AssistantAgent]:
        client = self.clients.get(self.config.helper_max_tokens)
        return [_agent(r, client, _with_role(conv.instructions, ROLES[r]), conv.messages) for r in self.config.helpers]

    async def answer(self, turn: Turn, conv: Conversation) -> AsyncIterator[str]:
        turn.trace.notes["coordination"] = self.config.coordination
        stream = self._gather(conv) if self.config.coordination == "gather" else self._low_latency(turn, conv)
        async for token in stream:
            yield token

    async def _gather(self, conv: Conversation) -> AsyncIterator[str]:
        # the team is started with the caller's last message as its task, so the members' own contexts hold
        # only what came before it (otherwise every member would read the question twice)
        task: str | None = None
        if conv.messages and isinstance(conv.messages[-1], UserMessage):
            task = str(conv.messages[-1].content)
            conv = Conversation(conv.instructions, conv.messages[:-1])
        editor_client = self.clients.get(self.config.max_tokens)
        editor = _agent("editor", editor_client, _with_role(conv.instructions, EDITOR_ROLE), conv.messages)
        participants = [*self._helpers(conv), editor]
        team = RoundRobinGroupChat(participants, max_turns=len(participants))  # type: ignore[arg-type]
        async for token in stream_tokens(team, task=task, speaker="editor"):
            yield token

    async def _low_latency(self, turn: Turn, conv: Conversation) -> AsyncIterator[str]:
        t0 = time.perf_counter()
        lead_client = self.clients.get(self.config.lead_in_max_tokens)
        lead_agent = _agent("editor", lead_client, _with_role(conv.instructions, LEAD_IN_ROLE), conv.messages)
        lead_stream = stream_tokens(lead_agent, speaker="editor")
        accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        hook = _on_accepted.set(lambda: accepted.done() or accepted.set_result(None))
        try:  # the task copies the context, so only the lead-in's request reports its acceptance
            first = asyncio.ensure_future(anext(lead_stream, None))
        finally:
            _on_accepted.reset(hook)
        notes: dict[str, list[str]] = {}
        helper_tasks: dict[str, asyncio.Task[None]] = {}
        try:
            # the helpers go out once the server has queued the lead-in (or it failed), so a one-slot
            # server such as llama.cpp serves the lead-in first whatever order the sockets would race in
            await asyncio.wait([first, accepted], return_when=asyncio.FIRST_COMPLETED)
            for agent in self._helpers(conv):
                notes[agent.name] = []
                helper_tasks[agent.name] = asyncio.create_task(self._collect(agent, notes[agent.name]))
            lead = ""
            async for piece in first_sentence(lead_stream, await first):
                lead += piece
                yield piece
            await lead_stream.aclose()  # a lead-in longer than one sentence is cut here
            turn.trace.notes["lead_in_s"] = round(time.perf_counter() - t0, 4)

            _done, pending = await asyncio.wait(helper_tasks.values(), timeout=self.config.helper_wait_s)
            for t in pending:  # out of time: use what they wrote so far, free the server for the editor
                t.cancel()
            turn.trace.notes["helpers_partial"] = bool(pending)
            turn.trace.notes["helpers_s"] = round(time.perf_counter() - t0, 4)
            finished = [(n, t) for n, t in helper_tasks.items() if t.done() and not t.cancelled()]
            errors = {n: error_kind(e) for n, t in finished if (e := t.exception()) is not None}
            if errors:  # a failed helper leaves what it wrote; the spoken answer goes on without the rest
                turn.trace.notes["helper_errors"] = errors
            gathered = "\n".join(f"{name}: {''.join(parts).strip()}" for name, parts in notes.items() if parts)
            role = CONTINUE_ROLE.format(lead=lead.strip(), notes=gathered or "- none")
            cont_client = self.clients.get(self.config.max_tokens)
            cont = _agent("editor", cont_client, _with_role(conv.instructions, role), conv.messages)
            need_space = bool(lead) and not lead[-1].isspace()
            async for token in skip_repeat(stream_tokens(cont, speaker="editor"), lead):
                if need_space:
                    token = token if token[:1].isspace() else " " + token
                    need_space = False
                yield token
        finally:
            first.cancel()
            await asyncio.wait([first])  # the generator is not running any more, so it can be closed
            await lead_stream.aclose()
            for t in helper_tasks.values():
                t.cancel()
            if helper_tasks:
                await asyncio.wait(helper_tasks.values())

    @staticmethod
    async def _collect(agent: AssistantAgent, into: list[str]) -> None:
        """Stream a helper's notes into ``into`` so the editor can use partial work if time runs out."""
        async for token in stream_tokens(agent, speaker=agent.name):
            into.append(token)


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
    "AutoGenStrategy",
    "Conversation",
    "HybridStrategy",
    "ModelClients",
    "MultiAgentStrategy",
    "PooledOpenAIClient",
    "first_sentence",
    "model_info_for",
    "skip_repeat",
    "stream_tokens",
    "to_autogen",
]
