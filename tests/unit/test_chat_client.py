"""The chat client (``workbench/models/chat_client.py``): pooled connections survive streamed answers,
an interrupted answer still closes its connection at once, and the plain-JSON fast path sends exactly
what the OpenAI SDK sends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from workbench.models.chat_client import ChatClient, env_proxy, is_plain_json
from workbench.testing import Script, ScriptedEndpoint

MESSAGES = [
    {"role": "system", "content": "You are Diana."},
    {"role": "user", "content": "When do you open?"},
    {"role": "assistant", "content": "At eight.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "hours", "arguments": "{\"day\": \"mon\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "8-18"},
    {"role": "user", "content": [{"type": "text", "text": "And on Sunday?"}]},
]  # fmt: skip


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


async def test_streamed_answers_reuse_one_connection(upstream: ScriptedEndpoint) -> None:
    connects = counting_connects(asyncio.get_running_loop())
    client = ChatClient(base_url=upstream.base_url, api_key="k", timeout_s=10)
    answers = [await stream_text(client, messages=MESSAGES) for _ in range(5)]
    assert answers == ["We open at eight on weekdays."] * 5
    assert connects["n"] == 1 and upstream.open_connections == 1
    # the SDK's own client, for comparison: a new connection per streamed answer (openai-python #3440)
    plain = openai.AsyncOpenAI(base_url=upstream.base_url, api_key="k")
    before = connects["n"]
    for _ in range(3):
        await stream_text(plain, messages=MESSAGES)
    assert connects["n"] - before == 3
    await client.close()
    await plain.close()


async def test_an_interrupted_answer_closes_its_connection_at_once(upstream: ScriptedEndpoint) -> None:
    upstream.push(Script(text=" ".join(["word"] * 40), gap_s=0.05))
    client = ChatClient(base_url=upstream.base_url, api_key="k", timeout_s=10)
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    async for _ in stream:
        break
    t0 = time.perf_counter()
    await stream.close()
    assert time.perf_counter() - t0 < 0.05  # no waiting for the rest of the answer
    rec = upstream.chat_requests[0]
    assert await rec.wait_done(1.0) and rec.disconnected and not rec.completed
    assert await stream_text(client, messages=MESSAGES) == "We open at eight on weekdays."  # a fresh connection
    await client.close()


async def test_the_fast_path_sends_what_the_sdk_sends(upstream: ScriptedEndpoint) -> None:
    params: dict[str, Any] = {
        "messages": MESSAGES,
        "temperature": 0.2,
        "max_completion_tokens": 64,
        "stream_options": {"include_usage": True},
        "tools": openai.omit,
        "tool_choice": openai.NOT_GIVEN,
        "extra_body": {"max_tokens": 64},
        "extra_headers": {"X-Trace": "t1"},
    }
    fast = ChatClient(base_url=upstream.base_url, api_key="k", timeout_s=10)
    sdk = openai.AsyncOpenAI(base_url=upstream.base_url, api_key="k", max_retries=0)
    await stream_text(fast, **params)
    await stream_text(sdk, **params)
    a, b = upstream.chat_requests
    assert a.body == b.body and "tools" not in a.body and a.body["max_tokens"] == 64
    assert a.headers["X-Trace"] == b.headers["X-Trace"] == "t1"
    assert a.headers["Authorization"] == b.headers["Authorization"] == "Bearer k"
    await fast.close()
    await sdk.close()


async def test_parameters_that_are_not_plain_json_take_the_sdks_path(upstream: ScriptedEndpoint) -> None:
    client = ChatClient(base_url=upstream.base_url, api_key="k", timeout_s=10)
    as_tuple = tuple(dict(m) for m in MESSAGES[:2])  # an iterable the SDK turns into a list
    assert not is_plain_json({"messages": as_tuple})
    assert await stream_text(client, messages=as_tuple) == "We open at eight on weekdays."
    assert upstream.chat_requests[0].body["messages"] == MESSAGES[:2]
    reply = await client.chat.completions.create(model="m", messages=MESSAGES)  # not streamed: the SDK's path
    assert reply.choices[0].message.content == "We open at eight on weekdays."
    await client.close()


def test_plain_json_means_json_types_only() -> None:
    assert is_plain_json({"a": [1, 2.5, "x", None, True, {"b": []}]})
    assert not is_plain_json({"a": (1, 2)}) and not is_plain_json({1: "x"}) and not is_plain_json({"a": b"x"})
    deep: Any = "x"
    for _ in range(40):
        deep = [deep]
    assert not is_plain_json(deep)  # too deep to walk cheaply: the SDK decides


def test_env_proxy_follows_the_environment_but_never_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "llm.internal.example")
    assert env_proxy(httpx.URL("https://api.openai.com/v1")) == "http://proxy.corp:3128"
    assert env_proxy(httpx.URL("https://llm.internal.example/v1")) is None
    assert env_proxy(httpx.URL("http://127.0.0.1:8080/v1")) is None  # the embedded llama.cpp server
    assert env_proxy(httpx.URL("http://localhost:8080/v1")) is None
    assert env_proxy(httpx.URL("http://api.example.test/v1")) is None  # no HTTP_PROXY set


async def test_requests_go_through_the_proxy_the_environment_names(
    upstream: ScriptedEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", upstream.base_url.removesuffix("/v1"))  # the endpoint doubles as the proxy
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = ChatClient(base_url="http://api.example.test/v1", api_key="k", timeout_s=10)
    assert await stream_text(client, messages=MESSAGES) == "We open at eight on weekdays."
    assert upstream.chat_requests[0].headers["Host"] == "api.example.test"
    await client.close()


async def test_netrc_credentials_do_not_clash_with_the_api_key(
    upstream: ScriptedEndpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    client = ChatClient(base_url=upstream.base_url, api_key="k", timeout_s=10)
    assert await stream_text(client, messages=MESSAGES) == "We open at eight on weekdays."
    assert upstream.chat_requests[0].headers["Authorization"] == "Bearer k"
    await client.close()
