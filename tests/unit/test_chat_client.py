"""The chat client (``workbench/models/chat_client.py``) is the OpenAI SDK's own: these tests pin the SDK
behaviour the measurements rely on. Pooled connections survive streamed answers (openai-python #3440, fixed
in openai 3: if a later SDK drops the connection again, the first test fails), an interrupted answer still
closes its connection at once, and a loopback endpoint never goes through an environment proxy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from workbench.models.chat_client import chat_client
from workbench.testing import Script, ScriptedEndpoint

MESSAGES = [
    {"role": "system", "content": "You are Diana."},
    {"role": "user", "content": "When do you open?"},
]

TRANSPORTS = ["httpx", "aiohttp"]


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedEndpoint]:
    async with ScriptedEndpoint(Script(text="We open at eight on weekdays.")) as ep:
        yield ep


def counting_connects(loop: asyncio.AbstractEventLoop) -> dict[str, int]:
    """Count TCP connects made on this loop (what a new pooled connection costs)."""
    seen = {"n": 0}
    real = loop.sock_connect

    async def sock_connect(sock: Any, address: Any) -> None:
        seen["n"] += 1
        await real(sock, address)

    loop.sock_connect = sock_connect  # type: ignore[method-assign]
    return seen


async def stream_text(client: openai.AsyncOpenAI, **params: Any) -> str:
    stream = await client.chat.completions.create(model="m", stream=True, **params)
    async with stream:
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_streamed_answers_reuse_one_connection(upstream: ScriptedEndpoint, transport: str) -> None:
    connects = counting_connects(asyncio.get_running_loop())
    client = chat_client(base_url=upstream.base_url, api_key="k", timeout_s=10, transport=transport)  # type: ignore[arg-type]
    answers = [await stream_text(client, messages=MESSAGES) for _ in range(5)]
    assert answers == ["We open at eight on weekdays."] * 5
    if transport == "httpx":  # aiohttp connects through its own resolver path, not loop.sock_connect
        assert connects["n"] == 1
    assert upstream.open_connections == 1
    await client.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_interrupted_answer_closes_its_connection_at_once(upstream: ScriptedEndpoint, transport: str) -> None:
    upstream.push(Script(text=" ".join(["word"] * 40), gap_s=0.05))
    client = chat_client(base_url=upstream.base_url, api_key="k", timeout_s=10, transport=transport)  # type: ignore[arg-type]
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    async for _ in stream:
        break
    await stream.close()
    rec = upstream.chat_requests[0]
    # the server sees the disconnect before it has sent the rest of the answer (40 words, 50 ms apart): the
    # wait outlasts the whole answer, so a connection drained instead of closed shows as a completed answer
    assert await rec.wait_done(10.0) and rec.disconnected and not rec.completed
    assert rec.disconnected_at is not None and all(sent <= rec.disconnected_at for sent in rec.token_times)
    assert 1 <= len(rec.tokens_sent) < 40
    assert await stream_text(client, messages=MESSAGES) == "We open at eight on weekdays."  # a fresh connection
    await client.close()


async def test_a_loopback_endpoint_ignores_environment_proxies(
    upstream: ScriptedEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there: a proxied request would fail
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = chat_client(base_url=upstream.base_url, api_key="k", timeout_s=10)
    assert await stream_text(client, messages=MESSAGES) == "We open at eight on weekdays."
    await client.close()


async def test_a_remote_endpoint_goes_through_the_proxy_the_environment_names(
    upstream: ScriptedEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", upstream.base_url.removesuffix("/v1"))  # the endpoint doubles as the proxy
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = chat_client(base_url="http://api.example.test/v1", api_key="k", timeout_s=10)
    assert await stream_text(client, messages=MESSAGES) == "We open at eight on weekdays."
    assert upstream.chat_requests[0].headers["Host"] == "api.example.test"
    assert upstream.chat_requests[0].headers["Authorization"] == "Bearer k"
    await client.close()
