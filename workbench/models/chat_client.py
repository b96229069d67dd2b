"""The OpenAI client every chat endpoint is reached through: the SDK's own, built the way
livekit-plugins-openai builds it, so the harness measures the HTTP a stock LiveKit agent uses.

openai 3 keeps a connection across streamed answers (it reads the body's end after ``data: [DONE]``,
the fix for openai-python #3440), so no transport of our own is needed; ``tests/unit/test_chat_client.py``
fails if a later SDK stops doing that. ``transport="aiohttp"`` selects the SDK's own aiohttp option
(``openai.DefaultAioHttpClient``), which costs less CPU per request (see BENCHMARKS.md).

One addition to the SDK's client: a streamed answer must end with a ``finish_reason`` or ``data: [DONE]``.
A close-delimited body (no length, no chunked encoding) that the server closes mid-answer looks complete to
HTTP, and the SDK (and LiveKit's plugin, AutoGen and AG2 above it) would end the answer as if it were; this
client raises :class:`StreamCut` there instead, at the same place and wrapped the same way as a body cut by a
transport error, so every strategy records it as ``stream_cut`` and recovers.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Literal
from urllib.parse import urlsplit

import httpx2
import openai
from openai._streaming import ServerSentEvent, SSEDecoder

Transport = Literal["httpx", "aiohttp"]
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_FINISHED = re.compile(r'"finish_reason"\s*:\s*"')  # a string value (null is no finish); a key, never content


class StreamCut(httpx2.RemoteProtocolError):
    """A streamed answer whose body ended without a ``finish_reason`` or ``data: [DONE]``: cut mid-answer."""


class _EndCheckingDecoder(SSEDecoder):
    """The SDK's SSE decoder, raising :class:`StreamCut` when the body ends before the answer does.

    Runs inside the SDK's event loop over the body, which wraps it in ``openai.APIConnectionError`` as it does
    a transport error; a consumer that stops early (``[DONE]``, a barge-in) closes it before the check.
    """

    async def aiter_bytes(self, iterator: AsyncIterator[bytes]) -> AsyncIterator[ServerSentEvent]:
        ended = False
        async for sse in super().aiter_bytes(iterator):
            ended = ended or sse.data.startswith("[DONE]") or _FINISHED.search(sse.data) is not None
            yield sse
        if not ended:
            raise StreamCut("the streamed answer ended without a finish_reason or [DONE]: the stream was cut")


class ChatClient(openai.AsyncOpenAI):
    """``openai.AsyncOpenAI`` whose streams end only with the answer (:class:`StreamCut` otherwise)."""

    def _make_sse_decoder(self) -> SSEDecoder:  # the SDK's hook for its streams' decoder (openai 3)
        return _EndCheckingDecoder()


def chat_client(
    *, base_url: str, api_key: str, timeout_s: float, transport: Transport = "httpx", max_connections: int = 64
) -> openai.AsyncOpenAI:
    """A pooled :class:`ChatClient` with no SDK retries (the strategies' own timeouts and fallback decide).

    A loopback endpoint (the embedded llama.cpp server) never goes through a proxy named in the environment.
    """
    trust_env = urlsplit(base_url).hostname not in LOOPBACK
    kwargs = {
        "timeout": httpx2.Timeout(timeout_s, connect=5.0),
        "limits": httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        "trust_env": trust_env,
    }
    http_client = openai.DefaultAioHttpClient(**kwargs) if transport == "aiohttp" else httpx2.AsyncClient(**kwargs)
    return ChatClient(base_url=base_url, api_key=api_key, max_retries=0, http_client=http_client)


__all__ = ["LOOPBACK", "ChatClient", "StreamCut", "Transport", "chat_client"]
