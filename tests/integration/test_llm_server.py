"""The managed llama.cpp server, reached through livekit.plugins.openai.LLM like every strategy."""

from __future__ import annotations

import os
import signal
import time

import psutil
from livekit.agents import llm


async def _stream(lm: llm.LLM, prompt: str) -> tuple[float, float, str]:
    ctx = llm.ChatContext()
    ctx.add_message(role="user", content=prompt)
    t0 = time.perf_counter()
    first, text = None, ""
    async with lm.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                first = first if first is not None else time.perf_counter() - t0
                text += chunk.delta.content
    return (first if first is not None else float("nan")), time.perf_counter() - t0, text


async def test_streams_first_chunk_before_the_end(stack) -> None:
    lm = stack.llm()
    first, total, text = await _stream(lm, "List three colours, one per line.")
    await lm.aclose()
    assert text.strip(), "no text streamed"
    assert first < total, "the first chunk must arrive before the stream ends (streaming, not buffered)"


def test_server_binds_loopback_only_with_safe_flags(stack) -> None:
    ep = stack.endpoint()
    cmd = ep.server.command()
    assert ep.base_url.startswith("http://127.0.0.1:")
    assert cmd[cmd.index("--logits_all") + 1] == "False"
    assert cmd[cmd.index("--interrupt_requests") + 1] == "False"
    listening = {c.laddr.ip for c in psutil.Process(ep.server.pid).net_connections() if c.status == "LISTEN"}
    assert listening == {"127.0.0.1"}


async def test_killed_server_is_restarted_for_the_next_request(stack) -> None:
    ep = stack.endpoint()
    old_pid, restarts = ep.server.pid, ep.server.restarts
    os.kill(old_pid, signal.SIGKILL)
    psutil.Process(old_pid).wait(5) if psutil.pid_exists(old_pid) else None
    ep.ensure_ready()  # what a strategy does before each request
    lm = stack.llm()
    _, _, text = await _stream(lm, "Say hi.")
    await lm.aclose()
    assert text.strip()
    assert ep.server.pid != old_pid and ep.server.restarts == restarts + 1
    assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE


def test_server_dies_with_its_parent(tmp_path) -> None:
    """Even a SIGKILLed parent leaves no server behind (the child watches its parent)."""
    import subprocess
    import sys

    script = (
        "from pathlib import Path; from workbench.core.config import EndpointConfig;"
        "from workbench.models.llm_server import LocalLLMServer;"
        f"s = LocalLLMServer(EndpointConfig(), log_dir=Path({str(tmp_path)!r})); s.start();"
        "print(s.pid, flush=True); import time; time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    server_pid = int(parent.stdout.readline())
    assert psutil.pid_exists(server_pid)
    parent.kill()
    parent.wait()
    _gone, alive = psutil.wait_procs([psutil.Process(server_pid)], timeout=10)
    assert not alive, "server outlived its killed parent"
