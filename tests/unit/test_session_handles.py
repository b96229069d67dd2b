"""Per-session handles (``workbench/models/session.py``): concurrent sessions share one strategy and
one copy of each speech model, but never receive each other's metrics or errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from livekit.agents import AgentSession, llm

from workbench.core.config import EndpointConfig, TTSConfig, WorkbenchConfig
from workbench.models import ModelStack
from workbench.models.session import SessionHandles, for_session
from workbench.models.tts import EspeakTTS
from workbench.pipeline import build_agent, build_session
from workbench.strategies import build
from workbench.testing import Script, ScriptedEndpoint


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedEndpoint]:
    async with ScriptedEndpoint(Script(text="We open at eight on weekdays.")) as ep:
        yield ep


async def test_sessions_sharing_a_strategy_see_only_their_own_metrics(upstream: ScriptedEndpoint) -> None:
    stack = ModelStack(WorkbenchConfig(llm=EndpointConfig(kind="openai", base_url=upstream.base_url, model="m")))
    strategy = build("plain", stack)
    sessions: list[AgentSession] = [build_session(stack, strategy, mode="text") for _ in range(2)]
    seen: list[list[Any]] = [[], []]
    errors: list[list[Any]] = [[], []]
    for i, session in enumerate(sessions):
        session.on("metrics_collected", lambda e, i=i: seen[i].append(e.metrics))
        session.on("error", lambda e, i=i: errors[i].append(e))
        await session.start(build_agent())
    assert all(s.llm is not strategy and s.llm.label == strategy.label for s in sessions)
    await sessions[0].run(user_input="When do you open?")
    await sessions[0].run(user_input="And on Sunday?")
    await sessions[1].run(user_input="Where are you?")
    llm_metrics = [[m for m in got if m.type == "llm_metrics"] for got in seen]
    assert [len(m) for m in llm_metrics] == [2, 1]  # each session counts only its own turns
    # traces stay in the one strategy: the harness reads any session's turn from it
    for session in sessions:
        user = [i for i in session.history.items if isinstance(i, llm.ChatMessage) and i.role == "user"][-1]
        trace = strategy.trace_for(user.id)
        assert trace is not None and trace.first_chunk_s is not None
    for session in sessions:
        await session.aclose()
    await strategy.aclose()
    assert errors == [[], []]


def test_a_speech_model_handle_shares_the_model_but_not_the_events() -> None:
    tts = EspeakTTS(TTSConfig(kind="espeak"))
    handle = for_session(tts)
    assert isinstance(tts, SessionHandles) and handle is not tts
    assert handle._executor is tts._executor and handle.config is tts.config  # one synthesiser thread
    heard: list[str] = []
    tts.on("error", lambda e: heard.append("shared"))
    handle.on("error", lambda e: heard.append("handle"))
    handle.emit("error", object())
    assert heard == ["handle"]
    assert len(handle.synthesize_bytes("Hello.")) > 0
    fake = object()
    assert for_session(fake) is fake  # plugins and test fakes are passed through unchanged
