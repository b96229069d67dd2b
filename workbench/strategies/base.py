"""The one base every strategy shares: a real ``livekit.agents.llm.LLM`` that streams.

A strategy declares its YAML keys (``Config``) and implements a single async generator,
:meth:`Strategy.generate`, yielding text deltas or ``ChatChunk``s as they arrive. The base adds
what every strategy needs and none should re-implement: the validated config, the endpoint and
LLM it names (``turn.stream()``, restarting a managed server that died), history trimmed to the
endpoint's prompt budget, first-chunk and between-chunk timeouts, fallback to another strategy or
a spoken apology, a per-turn :class:`TurnTrace` the harness reads, prompt cancellation (closing
the stream cancels the generator and, with it, the upstream request), and ``aclose``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Self

import httpx2
import openai
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectionError,
    APIConnectOptions,
    APIError,
    APITimeoutError,
    llm,
)
from livekit.agents.llm import ChatContext, ChatMessage
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from pydantic import BaseModel, ConfigDict, model_validator

from workbench.core.types import Passage, TurnTrace
from workbench.models.chat_client import StreamCut
from workbench.models.session import SessionHandles

if TYPE_CHECKING:
    from workbench.models import ModelStack, ResolvedEndpoint

log = logging.getLogger(__name__)

DEFAULT_PROMPT_BUDGET = 1900  # history tokens for a strategy built without a stack (no endpoint to ask)


class StrategyOptions(BaseModel):
    """Behaviour shared by all strategies (YAML keys under a strategy's config)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = "default"
    history_tokens: int | None = None  # None: the endpoint's prompt budget
    first_chunk_timeout_s: float = 15.0
    chunk_timeout_s: float = 10.0
    fallback: str | dict[str, Any] | None = None  # another strategy, by name or config
    apology: str | None = "Sorry, I'm having trouble answering right now. Could you say that again?"

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        """A misspelt key names the keys there are: a typo must not pass silently as a default."""
        if isinstance(data, dict) and (unknown := sorted(set(data) - set(cls.model_fields))):
            keys = ", ".join(sorted(cls.model_fields))
            raise ValueError(
                f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} (the keys are: {keys})"
            )
        return data


def error_kind(e: BaseException) -> str:
    """Short, stable names for what went wrong (used in turn rows and fault tables).

    Walks the cause chain: the LiveKit plugin wraps every failure in one generic
    ``APIConnectionError``, and the real cause (a cut stream, bad JSON) is underneath.
    """
    chain: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and len(chain) < 10 and all(cur is not c for c in chain):
        chain.append(cur)
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    for x in reversed(chain):  # the root cause is the most specific (the SDK wraps a cut stream as a connection error)
        kind = _one_error_kind(x)
        if kind is not None:
            return kind
    if any(isinstance(x, APIConnectionError) for x in chain):
        return "connection"
    return type(e).__name__


def _one_error_kind(e: BaseException) -> str | None:
    if isinstance(e, TimeoutError | APITimeoutError | openai.APITimeoutError | httpx2.TimeoutException):
        return "timeout"
    status = getattr(e, "status_code", None)
    if isinstance(status, int) and status > 0:
        return f"http_{status}"
    if isinstance(e, StreamCut):  # the body ended cleanly, but before a finish_reason or [DONE]
        return "stream_cut"
    # openai wraps failures of the request itself (refused, dropped before any response)
    if isinstance(e, openai.APIConnectionError | httpx2.ConnectError | ConnectionError):
        return "connection"
    if isinstance(e, httpx2.RemoteProtocolError | httpx2.ReadError):
        # the connection closed before any response (httpcore's wording for it) or the body stopped mid-answer
        return "connection" if "without sending a response" in str(e) else "stream_cut"
    if isinstance(e, ValueError):
        return "malformed"
    return None  # livekit's APIConnectionError says nothing by itself: look at its cause


@functools.lru_cache(maxsize=8192)
def count_tokens(text: str) -> int:
    """Local token estimate (GPT-2 BPE, shipped with Whisper): close enough when an endpoint reports no usage.

    Cached: history trimming recounts every earlier message on every turn.
    """
    return len(_encoder().encode(text, add_special_tokens=False).ids) if text else 0


_ENC: Any = None


def _encoder() -> Any:
    global _ENC
    if _ENC is None:
        from tokenizers import Tokenizer  # offline: tiktoken would download its vocabulary

        from workbench.models.assets import whisper_dir

        _ENC = Tokenizer.from_file(str(whisper_dir() / "tokenizer.json"))
    return _ENC


def _item_text(item: Any) -> str:
    if isinstance(item, ChatMessage):
        return item.text_content or ""
    return str(getattr(item, "arguments", "") or getattr(item, "output", "") or "")


def trim_history(chat_ctx: ChatContext, budget: int) -> tuple[ChatContext, int]:
    """Keep the leading system/developer instructions, then the newest items that fit the budget.

    Returns a copy and how many items were dropped. The newest user turn is always kept.
    """
    items = list(chat_ctx.items)
    head = []
    while items and isinstance(items[0], ChatMessage) and items[0].role in ("system", "developer"):
        head.append(items.pop(0))
    used = sum(count_tokens(_item_text(i)) for i in head)
    kept: list[Any] = []
    for item in reversed(items):
        cost = count_tokens(_item_text(item)) + 4
        if kept and used + cost > budget:
            break
        kept.append(item)
        used += cost
    kept.reverse()
    while kept and kept[0].type == "function_call_output":  # never start with an orphan tool result
        kept.pop(0)
    out = chat_ctx.copy()
    out.items[:] = head + kept
    return out, len(items) - len(kept)


def last_user_message(chat_ctx: ChatContext) -> ChatMessage | None:
    for item in reversed(chat_ctx.items):
        if isinstance(item, ChatMessage) and item.role == "user":
            return item
    return None


@dataclass
class StrategyTurn:
    """One call of a strategy: what its ``generate`` gets for the turn (context, tools, trace, whose LLM)."""

    chat_ctx: ChatContext
    tools: list[llm.Tool]
    conn_options: APIConnectOptions
    trace: TurnTrace
    strategy: Strategy  # whose LLM :meth:`stream` reaches

    @property
    def user_text(self) -> str:
        msg = last_user_message(self.chat_ctx)
        return (msg.text_content or "") if msg else ""

    def stream(self, chat_ctx: ChatContext | None = None) -> AsyncIterator[llm.ChatChunk]:
        """The strategy's LLM answering this turn (or ``chat_ctx``), chunk by chunk as they arrive."""
        return self.strategy.stream_llm(self, chat_ctx)

    def passed_to(self, strategy: Strategy, chat_ctx: ChatContext) -> StrategyTurn:
        """This turn (same trace and tools) for an inner strategy's ``generate``, with its own context."""
        return replace(self, strategy=strategy, chat_ctx=chat_ctx)


class Strategy(SessionHandles, llm.LLM):
    """Base class: subclass, set ``kind``, declare its YAML keys as ``Config``, implement :meth:`generate`, register.

    Own recovery: ``llm.FallbackAdapter`` (livekit-agents 1.8.9) re-sends a failed turn to the failed LLM as a probe,
    skips that LLM in later turns, keeps no error kind, has no apology, and raises or glues the backup to a cut answer.
    """

    kind: ClassVar[str] = "strategy"
    Config: ClassVar[type[StrategyOptions]] = StrategyOptions
    config: StrategyOptions  # an instance of ``Config``, validated by the registry
    # False: never calls a model itself (extractive, or a wrapper whose inner strategy does), so no endpoint is resolved
    uses_endpoint: ClassVar[bool] = True
    # True: sends OpenAI API requests itself (an agent framework's client), so a factory endpoint cannot serve it
    openai_api: ClassVar[bool] = False
    max_traces: ClassVar[int] = 4096
    # backpressure: how far the producer may run ahead of the consumer before generate() is paused
    max_buffered_chunks: int = 64

    def __init__(self, config: StrategyOptions | None = None, *, stack: ModelStack | None = None) -> None:
        super().__init__()
        self.name = self.kind
        self.fallback: Strategy | None = None
        self._stack: ModelStack | None = None
        self._endpoint: ResolvedEndpoint | None = None
        self._llm: llm.LLM | None = None
        self._budget = DEFAULT_PROMPT_BUDGET
        self._traces: OrderedDict[str, TurnTrace] = OrderedDict()
        self._trace_listeners: list[Any] = []
        self._streams: weakref.WeakSet[StrategyStream] = weakref.WeakSet()
        self.bind(self.Config() if config is None else config, stack)
        _encoder()  # load the tokenizer now (~0.3 s once), not inside the event loop on the first turn

    @classmethod
    def from_config(cls, config: StrategyOptions, stack: ModelStack) -> Self:
        """Override only to construct with more than the config (e.g. a prebuilt index): :func:`build` binds the
        config, endpoint, name and fallback after construction, so an override cannot lose them."""
        return cls(config, stack=stack)

    def bind(
        self,
        config: StrategyOptions,
        stack: ModelStack | None,
        *,
        name: str | None = None,
        fallback: Strategy | None = None,
    ) -> None:
        """Apply a validated config: its endpoint and LLM from ``stack`` (resolving it starts a managed server)."""
        if not isinstance(config, self.Config):
            raise TypeError(f"strategy {self.kind!r} takes a {self.Config.__qualname__}, not {type(config).__name__}")
        self.config = config
        self.name = name or self.name
        if fallback is not None:
            self.fallback = fallback
        if stack is None:
            return
        self._budget = stack.config.endpoint(config.endpoint).prompt_budget()
        moved = self._endpoint is None or self._stack is not stack or self._endpoint.name != config.endpoint
        self._stack = stack
        if self.uses_endpoint and moved:
            self._endpoint, self._llm = stack.endpoint(config.endpoint), stack.llm(config.endpoint)

    @property
    def options(self) -> StrategyOptions:
        """The shared keys (timeouts, fallback, apology, history budget): the same object as ``config``."""
        return self.config

    @property
    def prompt_budget(self) -> int:
        """History tokens a turn may carry: ``history_tokens``, else the endpoint's prompt budget."""
        return self.config.history_tokens or self._budget

    @property
    def stack(self) -> ModelStack:
        """The model stack this strategy was built on (servers, pooled clients, the embedder)."""
        if self._stack is None:
            raise AttributeError(f"strategy {self.name!r} has no model stack: build it with build(spec, stack)")
        return self._stack

    @property
    def endpoint(self) -> ResolvedEndpoint:
        """The endpoint ``config.endpoint`` names, resolved on the stack."""
        if self._endpoint is None:
            raise AttributeError(f"strategy {self.name!r} has no endpoint: build it with build(spec, stack)")
        return self._endpoint

    async def ready(self) -> None:
        """Restart the managed model server if it died, before a request (cheap when it is alive)."""
        ep = self._endpoint
        if ep is not None and ep.server is not None and not ep.server.alive():
            await asyncio.to_thread(ep.ensure_ready)

    async def stream_llm(self, turn: StrategyTurn, chat_ctx: ChatContext | None = None) -> AsyncIterator[llm.ChatChunk]:
        """Forward this strategy's LLM's chunks as they arrive (tool calls included, nothing buffered)."""
        await self.ready()
        # the endpoint's own timeout: the strategy's first-chunk/chunk timeouts decide when to fall back
        timeout = self._endpoint.config.timeout_s if self._endpoint is not None else turn.conn_options.timeout
        opts = APIConnectOptions(max_retry=0, timeout=timeout)
        async with self.llm.chat(chat_ctx=chat_ctx or turn.chat_ctx, tools=turn.tools, conn_options=opts) as stream:
            async for chunk in stream:
                yield chunk

    @property
    def model(self) -> str:
        return self.name

    @property
    def provider(self) -> str:
        return "dianachat-workbench"

    def generate(self, turn: StrategyTurn) -> AsyncIterator[str | llm.ChatChunk]:
        """Yield the answer as it is produced: text deltas or ``ChatChunk``s (e.g. tool calls)."""
        raise NotImplementedError

    def chat(
        self,
        *,
        chat_ctx: ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> StrategyStream:
        # our own timeouts and fallback replace the framework's retries (a retry re-speaks)
        opts = APIConnectOptions(max_retry=0, retry_interval=0, timeout=conn_options.timeout)
        stream = StrategyStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=opts)
        self._streams.add(stream)
        return stream

    # -- traces for the harness -------------------------------------------------------
    def trace_for(self, user_message_id: str) -> TurnTrace | None:
        return self._traces.get(user_message_id)

    def on_trace(self, callback: Any) -> None:
        """Call ``callback(trace)`` when a turn finishes (the harness and the worker's logs)."""
        self._trace_listeners.append(callback)

    def _finish(self, trace: TurnTrace) -> None:
        trace.total_s = time.perf_counter() - trace.started
        key = trace.user_message_id or uuid.uuid4().hex
        self._traces[key] = trace
        while len(self._traces) > self.max_traces:
            self._traces.popitem(last=False)
        for cb in self._trace_listeners:
            cb(trace)

    async def aclose(self) -> None:
        """Close streams still open (a consumer that never closed its stream), the LLM, then the fallback."""
        for stream in list(self._streams):
            await stream.aclose()
        if self._llm is not None:
            await self._llm.aclose()
        if self.fallback is not None:
            await self.fallback.aclose()
        await super().aclose()

    # defined last: inside this class body, the name ``llm`` is the livekit module until here
    @property
    def llm(self) -> llm.LLM:
        """The LLM on ``config.endpoint``, built from the stack (what ``turn.stream()`` calls)."""
        if self._llm is None:
            raise AttributeError(f"strategy {self.name!r} has no LLM: build it with build(spec, stack)")
        return self._llm


def _speaks(chunk: llm.ChatChunk) -> bool:
    """A chunk with words or tool calls (not the lone space that separates a cut-off answer from what follows)."""
    d = chunk.delta
    return d is not None and (bool((d.content or "").strip()) or bool(d.tool_calls))


class StrategyStream(llm.LLMStream):
    def __init__(self, strategy: Strategy, **kwargs: Any) -> None:
        super().__init__(strategy, **kwargs)
        self._strategy = strategy
        self._id = uuid.uuid4().hex[:12]
        self._sent = 0  # chunks put in the channel ...
        self._taken = 0  # ... and chunks the consumer has taken: the difference is the backlog
        self._room = asyncio.Event()
        self._room.set()
        self._spaced = True  # the text sent so far ends in whitespace (or there is none)

    async def aclose(self) -> None:
        self._strategy._streams.discard(self)
        await super().aclose()

    async def __anext__(self) -> llm.ChatChunk:
        chunk = await super().__anext__()
        self._taken += 1
        if self._sent - self._taken < self._strategy.max_buffered_chunks:
            self._room.set()
        return chunk

    async def _send(self, item: str | llm.ChatChunk, trace: TurnTrace) -> bool:
        """Forward one item once the consumer has room; True if it carried output (text or tool calls)."""
        if isinstance(item, str):
            if not item:
                return False
            item = llm.ChatChunk(id=self._id, delta=llm.ChoiceDelta(role="assistant", content=item))
        elif item.usage is not None and item.usage.total_tokens:
            trace.notes["usage"] = item.usage.model_dump()  # the harness prefers reported usage to local counts
        while self._sent - self._taken >= self._strategy.max_buffered_chunks:
            self._room.clear()
            await self._room.wait()
        output = item.has_response()
        if output and trace.first_chunk_s is None:
            trace.first_chunk_s = time.perf_counter() - trace.started
        if output and trace.error_kind is not None and "recovery_s" not in trace.notes and _speaks(item):
            # first words of the fallback or apology: when the caller hears the turn recover
            trace.notes["recovery_s"] = time.perf_counter() - trace.started
        if item.delta is not None and item.delta.content:
            self._spaced = item.delta.content[-1].isspace()
        self._event_ch.send_nowait(item)
        self._sent += 1
        return output

    async def _run(self) -> None:
        s = self._strategy
        user = last_user_message(self._chat_ctx)
        trace = TurnTrace(strategy=s.name, user_message_id=user.id if user else None)
        ctx, trace.history_dropped = trim_history(self._chat_ctx, s.prompt_budget)
        turn = StrategyTurn(
            chat_ctx=ctx, tools=list(self._tools), conn_options=self._conn_options, trace=trace, strategy=s
        )
        sent = False
        try:
            gen = s.generate(turn)
            async with contextlib.aclosing(gen):  # type: ignore[type-var]
                while True:
                    limit = s.config.chunk_timeout_s if sent else s.config.first_chunk_timeout_s
                    try:
                        async with asyncio.timeout(limit):  # in this task: no task per chunk, unlike wait_for
                            item = await anext(gen)
                    except StopAsyncIteration:
                        break
                    sent = await self._send(item, trace) or sent
        except asyncio.CancelledError:
            trace.error_kind = "cancelled"
            raise
        except Exception as e:
            await self._recover(e, trace, sent)
        finally:
            s._finish(trace)

    async def _recover(self, e: Exception, trace: TurnTrace, sent: bool) -> None:
        """Fall back to another strategy, else speak the apology, else fail the turn loudly."""
        s = self._strategy
        trace.error_kind, trace.error, trace.partial = error_kind(e), str(e)[:500], sent
        log.warning("strategy %s turn %s failed: %s (%s)", s.name, trace.user_message_id, trace.error_kind, e)
        if sent and not self._spaced and (s.fallback is not None or s.config.apology):
            await self._send(" ", trace)  # what follows a cut-off answer must not glue onto its last word
        if s.fallback is not None:
            trace.fallback = s.fallback.name
            try:
                async with s.fallback.chat(chat_ctx=self._chat_ctx, tools=self._tools) as fb:
                    async for chunk in fb:
                        await self._send(chunk, trace)
                fb_trace = s.fallback.trace_for(trace.user_message_id or "")
                if fb_trace is None or fb_trace.error_kind is None:
                    return
                # the fallback itself failed and spoke its own apology; keep its record
                trace.notes["fallback_error"] = fb_trace.error_kind
                return
            except Exception as e2:
                trace.notes["fallback_error"] = error_kind(e2)
        if s.config.apology:
            trace.fallback = trace.fallback or "apology"
            await self._send(s.config.apology, trace)
            return
        raise APIConnectionError(f"strategy {s.name} failed: {trace.error_kind}", retryable=False) from e


__all__ = ["APIError", "Passage", "Strategy", "StrategyOptions", "StrategyStream", "StrategyTurn", "TurnTrace"]
