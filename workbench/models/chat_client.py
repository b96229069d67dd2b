"""The OpenAI client every chat endpoint is reached through: the SDK's own, built the way
livekit-plugins-openai builds it, so the harness measures the HTTP a stock LiveKit agent uses.

openai 3 keeps a connection across streamed answers (it reads the body's end after ``data: [DONE]``,
the fix for openai-python #3440), so no transport of our own is needed; ``tests/unit/test_chat_client.py``
fails if a later SDK stops doing that. ``transport="aiohttp"`` selects the SDK's own aiohttp option
(``openai.DefaultAioHttpClient``), which costs less CPU per request (see BENCHMARKS.md).
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

import httpx2
import openai

Transport = Literal["httpx", "aiohttp"]
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def chat_client(
    *, base_url: str, api_key: str, timeout_s: float, transport: Transport = "httpx", max_connections: int = 64
) -> openai.AsyncOpenAI:
    """A pooled ``openai.AsyncOpenAI`` with no SDK retries (the strategies' own timeouts and fallback decide).

    A loopback endpoint (the embedded llama.cpp server) never goes through a proxy named in the environment.
    """
    trust_env = urlsplit(base_url).hostname not in LOOPBACK
    kwargs = {
        "timeout": httpx2.Timeout(timeout_s, connect=5.0),
        "limits": httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        "trust_env": trust_env,
    }
    http_client = openai.DefaultAioHttpClient(**kwargs) if transport == "aiohttp" else httpx2.AsyncClient(**kwargs)
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, http_client=http_client)


__all__ = ["LOOPBACK", "Transport", "chat_client"]
