"""Fixtures of the agent-framework strategy tests: a scripted endpoint and a stack on it (test modules that
define their own ``endpoint`` or ``scripted_stack`` keep theirs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_cases import ANSWER

from workbench.core.config import EndpointConfig, WorkbenchConfig
from workbench.faults.endpoint import Script, ScriptedEndpoint
from workbench.models import ModelStack
from workbench.strategies.base import count_tokens


@pytest.fixture(scope="module")
def _warm_tokenizer() -> None:
    count_tokens("warm up")  # the history trimmer loads its tokenizer once (about a second)


@pytest.fixture
async def endpoint():
    async with ScriptedEndpoint(Script(text=ANSWER, ttft_s=0.02, gap_s=0.01)) as ep:
        yield ep


@pytest.fixture
def scripted_stack(endpoint: ScriptedEndpoint, tmp_path: Path):
    cfg = WorkbenchConfig(
        llm=EndpointConfig(kind="openai", base_url=endpoint.base_url, model=endpoint.model, max_tokens=48),
        state_dir=tmp_path,
    )
    with ModelStack(cfg) as s:
        yield s
