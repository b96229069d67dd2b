"""Factories for the voice agent, shared by the replay harness and the production worker.

Both build their ``Agent`` and ``AgentSession`` here, so what was measured is what ships.
"""

from __future__ import annotations

from typing import Any, Literal

from livekit.agents import Agent, AgentSession, llm

from workbench.models import ModelStack

DEFAULT_INSTRUCTIONS = (
    "You are Diana, the friendly front-desk voice assistant of a medical clinic. "
    "Answer in one or two short spoken sentences, without lists or markdown."
)


class DianaAgent(Agent):
    """The agent every run and the worker use; text clean-up before TTS lives in ``tts_node``."""

    def __init__(self, *, instructions: str = DEFAULT_INSTRUCTIONS, **kwargs: Any) -> None:
        super().__init__(instructions=instructions, **kwargs)


def build_agent(*, instructions: str = DEFAULT_INSTRUCTIONS, **kwargs: Any) -> DianaAgent:
    return DianaAgent(instructions=instructions, **kwargs)


def build_session(
    stack: ModelStack,
    strategy: llm.LLM,
    *,
    mode: Literal["text", "voice"] = "text",
    tts_kind: str | None = None,
) -> AgentSession:
    """An ``AgentSession`` with the strategy as its LLM; voice mode adds VAD, STT, TTS, turn detection."""
    if mode == "text":
        return AgentSession(llm=strategy, preemptive_generation=False)
    cfg = stack.config.turn
    return AgentSession(
        vad=stack.vad(),
        stt=stack.stt(),
        llm=strategy,
        tts=stack.tts(tts_kind),
        turn_detection=stack.turn_detection(),
        min_endpointing_delay=cfg.min_endpointing_delay,
        max_endpointing_delay=cfg.max_endpointing_delay,
        preemptive_generation=False,
        aec_warmup_duration=None,
        user_away_timeout=None,
    )
