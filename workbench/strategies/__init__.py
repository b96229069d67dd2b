"""Interchangeable LLM strategies, each a streaming ``livekit.agents.llm.LLM``."""

from workbench.strategies.base import Passage, Strategy, StrategyOptions, StrategyTurn, TurnTrace
from workbench.strategies.registry import REGISTRY, available, build, register, validate

__all__ = [
    "REGISTRY",
    "Passage",
    "Strategy",
    "StrategyOptions",
    "StrategyTurn",
    "TurnTrace",
    "available",
    "build",
    "register",
    "validate",
]
