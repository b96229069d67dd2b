"""The built-in control strategy. It is small: the shared machinery lives in ``base.Strategy``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from livekit.agents import llm

from workbench.strategies.base import Strategy, StrategyTurn
from workbench.strategies.registry import register


@register
class PlainStrategy(Strategy):
    """The base LLM through an OpenAI-compatible endpoint: the control every other strategy is compared with."""

    kind = "plain"

    async def generate(self, turn: StrategyTurn) -> AsyncIterator[str | llm.ChatChunk]:
        async for chunk in turn.stream():
            yield chunk
