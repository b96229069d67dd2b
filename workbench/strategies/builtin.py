"""The built-in strategies. Each is small: the shared machinery lives in ``base.Strategy``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from livekit.agents import APIConnectOptions, llm

from workbench.models import ModelStack, ResolvedEndpoint
from workbench.strategies.base import Strategy, StrategyOptions, Turn
from workbench.strategies.registry import register


async def stream_llm(base: llm.LLM, turn: Turn, endpoint: ResolvedEndpoint | None,
                     chat_ctx: llm.ChatContext | None = None) -> AsyncIterator[llm.ChatChunk]:  # fmt: skip
    """Forward an upstream LLM's chunks as they arrive (tool calls included, nothing buffered)."""
    if endpoint is not None and endpoint.server is not None and not endpoint.server.alive():
        await asyncio.to_thread(endpoint.ensure_ready)  # a managed server died: restart it first
    # the endpoint's own timeout: the strategy's first-chunk/chunk timeouts decide when to fall back
    timeout = endpoint.config.timeout_s if endpoint is not None else turn.conn_options.timeout
    opts = APIConnectOptions(max_retry=0, timeout=timeout)
    async with base.chat(chat_ctx=chat_ctx or turn.chat_ctx, tools=turn.tools, conn_options=opts) as stream:
        async for chunk in stream:
            yield chunk


@register
class PlainStrategy(Strategy):
    """The base LLM through an OpenAI-compatible endpoint: the control every other strategy is compared with."""

    kind = "plain"

    class Config(StrategyOptions):
        pass

    def __init__(self, base: llm.LLM, endpoint: ResolvedEndpoint | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base, self.endpoint = base, endpoint

    @classmethod
    def from_config(cls, cfg: Config, stack: ModelStack, **kwargs: Any) -> PlainStrategy:
        ep = stack.endpoint(cfg.endpoint)
        return cls(stack.llm(cfg.endpoint), ep, options=cfg, prompt_budget=ep.config.prompt_budget(), **kwargs)

    async def generate(self, turn: Turn) -> AsyncIterator[str | llm.ChatChunk]:
        async for chunk in stream_llm(self.base, turn, self.endpoint):
            yield chunk

    async def aclose(self) -> None:
        await self.base.aclose()
        await super().aclose()
