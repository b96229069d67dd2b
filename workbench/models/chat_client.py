"""The OpenAI client every chat endpoint is reached through, with three changes for per-turn cost.

1. Connections stay pooled across streamed answers. The OpenAI SDK stops reading a stream at
   ``data: [DONE]`` and closes the response before the chunked-encoding terminator that follows
   has been read; httpcore then discards the connection, so every turn pays a new TCP (and, for
   hosted endpoints, TLS) handshake. This is openai-python issue #3440, where the maintainers
   prefer a fix in the transport layer: here it is. A response whose last event was ``[DONE]`` has
   its few remaining bytes read (bounded in time and size) before it is closed, and its connection
   goes back to the pool. A response closed mid-answer (a caller interrupting, a timeout) is closed
   at once, exactly as before.
2. Streamed chat requests whose parameters are plain JSON skip the SDK's request transform. The
   SDK walks every message against each member of the message-type union (about 2 ms of CPU per
   request with a few turns of history, half of what a whole turn costs against an instant
   endpoint); for plain JSON that walk only drops omitted parameters, because chat parameters
   have no aliases or formatted fields. Anything else (pydantic objects, files, iterators) takes
   the SDK's own path.
3. HTTP goes through aiohttp's C parser rather than httpcore and h11 (pure Python), as the SDK's
   own ``openai[aiohttp]`` option does; its errors are mapped to the httpx errors the SDK and
   ``strategies.base.error_kind`` classify (timeouts, refused connections, cut streams). Proxies come
   from ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` as with the SDK's default client (never for a
   loopback host).
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import AsyncIterator
from functools import cached_property
from typing import Any

import aiohttp
import httpx
import openai
from openai._base_client import make_request_options
from openai._types import NotGiven, Omit
from openai.resources.chat import AsyncChat
from openai.resources.chat.completions import AsyncCompletions
from openai.types.chat import ChatCompletion, ChatCompletionChunk

DONE_MARKER = b"data: [DONE]"
DRAIN_TIMEOUT_S = 0.25
"""How long a finished stream's terminator may take to arrive before the connection is dropped."""
DRAIN_MAX_BYTES = 64 * 1024


class _DrainingStream(httpx.AsyncByteStream):
    """The response body as it streams, remembering its tail to know whether the server said [DONE]."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner
        self._iter: AsyncIterator[bytes] | None = None
        self._tail = b""
        self._exhausted = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._iter = aiter(self._inner)
        async for chunk in self._iter:
            self._tail = (self._tail + chunk)[-64:]
            yield chunk
        self._exhausted = True

    @property
    def finished_by_server(self) -> bool:
        return DONE_MARKER in self._tail and self._tail.rstrip().endswith(b"[DONE]")

    async def aclose(self) -> None:
        if self._iter is not None and not self._exhausted and self.finished_by_server:
            try:  # only the chunked terminator is left: read it so the connection can be reused
                read = 0
                async with asyncio.timeout(DRAIN_TIMEOUT_S):
                    async for chunk in self._iter:
                        read += len(chunk)
                        if read > DRAIN_MAX_BYTES:
                            break
            except (TimeoutError, httpx.HTTPError, OSError):
                pass  # not reusable after all: closed below, as the SDK would have
        await self._inner.aclose()


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """Wraps a transport so that streamed responses that ended with ``[DONE]`` release their connection."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _DrainingStream(response.stream)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def _transport_error(exc: BaseException, *, reading: bool) -> httpx.TransportError:
    """aiohttp's errors as the httpx errors the OpenAI SDK and ``error_kind`` understand."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(message)  # the body or the response stopped half-way
    return httpx.ReadError(message) if reading else httpx.ConnectError(message)


class _AiohttpBody(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as e:
            raise _transport_error(e, reading=True) from e

    async def aclose(self) -> None:
        if self._response.content.is_eof():
            self._response.release()  # read to the end: the connection goes back to the pool
        else:
            self._response.close()  # stopped mid-answer: drop the connection, so the server stops generating


_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def env_proxy(url: httpx.URL) -> str | None:
    """The proxy ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` name for ``url``, as the SDK's default client
    would use; never one for a loopback host (an embedded server on this machine)."""
    if url.host in _LOOPBACK or urllib.request.proxy_bypass(url.host):
        return None
    return urllib.request.getproxies().get(url.scheme)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 through aiohttp (a C parser) instead of httpcore and h11 (pure Python).

    The OpenAI SDK supports aiohttp as its HTTP backend for the same reason (``openai[aiohttp]``). Here
    it cuts the CPU that concurrent streamed requests cost, which is most of a text turn's budget against
    a fast endpoint. The session lives on the event loop that made the first request, like httpx's pool.
    Proxies from the environment are looked up once per host: aiohttp's ``trust_env`` would do it in a
    thread on every request, and would also add ``~/.netrc`` credentials that clash with the API key.
    """

    def __init__(self, limits: httpx.Limits) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str, int | None], str | None] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0, keepalive_timeout=self._limits.keepalive_expiry or 5.0
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
            )  # httpx decodes bodies itself; an API client keeps no cookies
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        body = await request.aread()  # JSON already in memory for chat; multipart uploads are read here
        url = request.url
        origin = (url.scheme, url.host, url.port)
        if origin not in self._proxies:
            self._proxies[origin] = env_proxy(url)
        try:
            response = await self._client().request(
                request.method,
                str(request.url),
                headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
                data=body or None,
                allow_redirects=False,
                proxy=self._proxies[origin],
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=timeout.get("pool"), sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )  # fmt: skip
        except (aiohttp.ClientError, TimeoutError) as e:
            raise _transport_error(e, reading=False) from e
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_AiohttpBody(response),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def __del__(self) -> None:
        # a client nobody closed (its loop simply ended): drop its sockets quietly, as httpx's pool does,
        # with the connector's synchronous close (its public close() is a coroutine, and there is no loop)
        session = self._session
        if session is not None and not session.closed and session.connector is not None:
            with contextlib.suppress(Exception):
                session.connector._close()


def pooled_client(
    timeout_s: float, *, max_connections: int = 64, inner: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The ``httpx.AsyncClient`` every chat endpoint uses: aiohttp underneath (or ``inner``, which the
    transport benchmark sets to httpx's own), keep-alive across streamed answers."""
    inner = inner or AiohttpTransport(httpx.Limits(max_connections=max_connections))
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=5.0), transport=KeepAliveTransport(inner))


_REQUEST_OPTIONS = ("extra_headers", "extra_query", "extra_body", "timeout")
_JSON_SCALARS = (str, int, float, bool, type(None))


def is_plain_json(value: Any, depth: int = 0) -> bool:
    """True for str-keyed dicts, lists, strings, numbers, booleans and None, nested at most 32 deep."""
    if isinstance(value, _JSON_SCALARS):
        return True
    if depth > 32:
        return False
    if type(value) is dict:
        return all(type(k) is str and is_plain_json(v, depth + 1) for k, v in value.items())
    if type(value) is list:
        return all(is_plain_json(v, depth + 1) for v in value)
    return False


class _ChatCompletions(AsyncCompletions):
    async def create(self, **params: Any) -> Any:  # type: ignore[override]
        body = {k: v for k, v in params.items() if k not in _REQUEST_OPTIONS and not isinstance(v, Omit | NotGiven)}
        if body.get("stream") is not True or not is_plain_json(body):
            return await super().create(**params)
        options = {k: params[k] for k in _REQUEST_OPTIONS if k in params}
        return await self._post(
            "/chat/completions",
            body=body,
            options=make_request_options(**options, security={"bearer_auth": True}),
            cast_to=ChatCompletion,
            stream=True,
            stream_cls=openai.AsyncStream[ChatCompletionChunk],
        )


class _Chat(AsyncChat):
    @cached_property
    def completions(self) -> AsyncCompletions:
        return _ChatCompletions(self._client)


class ChatClient(openai.AsyncOpenAI):
    """``openai.AsyncOpenAI`` with keep-alive streaming and the plain-JSON fast path for chat requests."""

    def __init__(self, *, base_url: str, api_key: str, timeout_s: float) -> None:
        super().__init__(base_url=base_url, api_key=api_key, max_retries=0, http_client=pooled_client(timeout_s))

    @cached_property
    def chat(self) -> AsyncChat:
        return _Chat(self)
