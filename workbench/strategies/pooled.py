"""Agent-framework model clients on the stack's pooled OpenAI client, one per event loop and ``max_tokens``.

AutoGen and AG2 each wrap an ``openai.AsyncOpenAI`` in a client of their own. Wrapping the stack's (one
per endpoint and loop) lets them share warm connections with ``plain`` and every other LLM on the
endpoint; the pool belongs to the stack and is released with it. :class:`PooledStrategy` is the strategy
base both frameworks' strategies share: their ``max_tokens`` key and the clients for the configured endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, Generic, Self, TypeVar

from livekit.agents import llm

from workbench.models import ModelStack, ResolvedEndpoint
from workbench.strategies.base import Strategy, StrategyOptions, StrategyTurn

log = logging.getLogger(__name__)

W = TypeVar("W")


class PooledClients(Generic[W]):
    """Wrappers made by :meth:`wrap`, one per loop and ``max_tokens``, remade when the loop's pool changes."""

    framework: ClassVar[str]

    def __init__(self, endpoint: ResolvedEndpoint, client_factory: Callable[[], Any]) -> None:
        self.endpoint = endpoint
        self._factory = client_factory
        # keyed weakly by loop, like the stack's pools: a finished loop takes its wrappers with it
        self._wrappers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, W]] = weakref.WeakKeyDictionary()

    @classmethod
    def for_stack(cls, stack: ModelStack, endpoint: ResolvedEndpoint) -> Self:
        """The stack's shared instance for this endpoint (every strategy of the framework reuses it)."""
        key = f"{cls.framework}-clients:{endpoint.name}"
        return stack._once(key, lambda: cls(endpoint, lambda: stack.http_client(endpoint)))

    def wrap(self, pool: Any, max_tokens: int) -> W:
        """The framework's client on ``pool``."""
        raise NotImplementedError

    def pool_of(self, wrapper: W) -> Any:
        """The OpenAI client ``wrapper`` sends through."""
        raise NotImplementedError

    def get(self, max_tokens: int | None = None) -> W:
        """The wrapper for the running loop (the factory gives the loop's pool) and this ``max_tokens``."""
        per_loop = self._wrappers.setdefault(asyncio.get_running_loop(), {})
        pool = self._factory()
        tokens = max_tokens or self.endpoint.config.max_tokens
        wrapper = per_loop.get(tokens)
        if wrapper is None or self.pool_of(wrapper) is not pool:
            wrapper = per_loop[tokens] = self.wrap(pool, tokens)
        return wrapper

    def clear(self) -> None:
        """Drop the wrappers (the next turn makes new ones); the HTTP pool is the stack's to close."""
        self._wrappers.clear()

    async def aclose(self) -> None:
        self.clear()


class PooledStrategy(Strategy):
    """A strategy whose agent framework reaches its endpoint through the stack's :class:`PooledClients`."""

    clients_type: ClassVar[type[PooledClients[Any]]]
    openai_api = True

    class Config(StrategyOptions):
        max_tokens: int | None = None  # None: the endpoint's max_tokens

    config: Config

    def __init__(self, config: StrategyOptions | None = None, *, stack: ModelStack | None = None) -> None:
        super().__init__(config, stack=stack)
        self.clients = self.clients_type.for_stack(self.stack, self.endpoint)

    async def aclose(self) -> None:
        await self.clients.aclose()
        await super().aclose()


def note_tools_not_passed(strategy: Any, turn: StrategyTurn, framework: str) -> None:
    """Say that this turn's session tools do not reach the framework's agents: ``tools_not_passed`` in the turn's
    trace (the tool names) and, once per strategy instance, a warning."""
    names = sorted(llm.ToolContext(turn.tools).function_tools) if turn.tools else []
    if not names:
        return
    turn.trace.notes["tools_not_passed"] = names
    if not getattr(strategy, "_warned_tools", False):
        strategy._warned_tools = True
        log.warning(
            "strategy %r (%s): the agent's tools %s are not passed to the %s agents, which answer without them "
            "(docs/strategies.md); use plain or rag to replay tool calls",
            strategy.name,
            strategy.kind,
            ", ".join(names),
            framework,
        )
