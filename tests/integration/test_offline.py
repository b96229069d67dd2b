"""Every model loads and runs with the network blocked: nothing comes from a hub."""

from __future__ import annotations

from workbench.core.config import WorkbenchConfig
from workbench.models import ModelStack
from workbench.models.doctor import run_checks


async def test_every_component_loads_and_runs_with_network_blocked(network_guard, tmp_path) -> None:
    with ModelStack(WorkbenchConfig(state_dir=tmp_path)) as fresh:  # fresh: nothing preloaded
        checks = await run_checks(fresh)
    failed = {c.component: c.detail for c in checks if not c.ok}
    assert not failed, failed
    assert {c.component for c in checks} >= {"llm", "tts (piper)", "tts (espeak)", "stt", "vad", "embeddings"}
    assert network_guard.attempts == [], f"tried to reach: {network_guard.attempts}"


def test_guard_really_blocks(network_guard) -> None:
    import socket

    import pytest

    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)
    assert network_guard.attempts == ["93.184.216.34"]
