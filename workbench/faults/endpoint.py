"""A scripted OpenAI-compatible chat-completions server for tests, fault injection and benchmarks.

Real HTTP on 127.0.0.1 (aiohttp), so the real ``openai`` client and LiveKit's OpenAI plugin are
exercised end to end; only the model is scripted. Each request takes the next :class:`Script`
from a queue (else the default), which fixes the tokens, their timing and any fault. Every
request is recorded with its body, arrival time, token send times and whether (and when) the
client went away, so tests can assert on prompts, latency and cancellation.

Timings are deadline-based from the request's arrival (no drift across tokens), so a client's
time to first chunk matches ``ttft_s`` to about a millisecond plus transport cost.

Two ways to run it::

    async with ScriptedEndpoint(Script(text="Hello there.", ttft_s=0.05)) as ep:  # same event loop
        ...
    with ScriptedEndpoint() as ep:  # own event loop in a background thread (sync code, benchmarks)
        ...
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

Fault = Literal["http_500", "http_429", "refuse", "hang", "cut", "cut_clean", "malformed", "trickle"]
FAULTS: tuple[str, ...] = ("http_500", "http_429", "refuse", "hang", "cut", "cut_clean", "malformed", "trickle")


def split_tokens(text: str) -> list[str]:
    """Word-sized deltas with their leading spaces (like BPE tokens); ``"".join`` gives ``text`` back."""
    return re.findall(r"\s*\S+|\s+$", text)


@dataclass
class ToolCall:
    """One function call streamed in the OpenAI ``tool_calls`` delta format."""

    name: str
    arguments: str | dict[str, Any] = "{}"
    id: str | None = None
    pieces: int = 2  # the arguments string is streamed in this many deltas, as real servers do

    @property
    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass
class Script:
    """What the server does for one request.

    ``tokens`` (exact deltas) wins over ``text`` (split into words); with neither, the answer
    echoes the last user message (``"You said: ..."``) so every request gets a deterministic,
    request-specific answer. ``ttft_s`` runs from the request's arrival to the first token,
    ``gap_s`` between tokens. Faults:

    - ``http_500`` / ``http_429`` (with ``Retry-After: retry_after_s``): after ``ttft_s``, an error status.
    - ``refuse``: the server closes the connection as soon as the request arrives, sending nothing.
      (For a real ECONNREFUSED use :func:`closed_port_url`.)
    - ``hang``: headers are never sent; the request stays open until the client gives up.
    - ``cut``: the connection is dropped after ``after`` tokens (mid-answer, no ``[DONE]``). The body is
      chunked, so the client sees an incomplete body: a transport error.
    - ``cut_clean``: the same cut on a close-delimited body (HTTP/1.1 with neither ``Content-Length`` nor
      chunked encoding, ``Connection: close``): the connection closes cleanly after ``after`` tokens, with
      no ``finish_reason`` and no ``[DONE]``. HTTP itself cannot tell this body from a complete one; only the
      missing end of the answer shows the cut. (Without ``stream``, a close-delimited JSON body cut short.)
    - ``malformed``: after ``after`` tokens, an event whose data is not JSON.
    - ``trickle``: tokens at ``trickle_gap_s`` intervals (a stalled but live upstream).
    """

    text: str | None = None
    tokens: list[str] | None = None
    ttft_s: float = 0.0
    gap_s: float = 0.0
    usage: dict[str, int] | None = None  # None: prompt words / tokens sent
    tool_calls: list[ToolCall] = field(default_factory=list)
    fault: Fault | None = None
    after: int = 0
    retry_after_s: float = 1.0
    trickle_gap_s: float = 1.0
    finish_reason: str | None = None  # None: "tool_calls" when there are tool calls, else "stop"

    def __post_init__(self) -> None:
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; one of {', '.join(FAULTS)}")
        if self.ttft_s < 0 or self.gap_s < 0 or self.after < 0:
            raise ValueError("ttft_s, gap_s and after must be >= 0")

    def deltas(self, request: dict[str, Any]) -> list[str]:
        if self.tokens is not None:
            return list(self.tokens)
        if self.text is not None:
            return split_tokens(self.text)
        if self.tool_calls:
            return []
        return split_tokens(f"You said: {last_user_text(request)}")

    @property
    def token_gap_s(self) -> float:
        return max(self.gap_s, self.trickle_gap_s) if self.fault == "trickle" else self.gap_s


def last_user_text(request: dict[str, Any]) -> str:
    for msg in reversed(request.get("messages") or []):
        if msg.get("role") == "user":
            return _content_text(msg.get("content"))
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


@dataclass
class RecordedRequest:
    """One request as the server saw it. Times are ``time.perf_counter()`` (comparable with the client's)."""

    method: str
    path: str
    body: Any
    headers: dict[str, str]
    arrived: float
    script: Script | None = None
    status: int | None = None
    token_times: list[float] = field(default_factory=list)
    tokens_sent: list[str] = field(default_factory=list)
    completed: bool = False  # the whole scripted response was written
    disconnected: bool = False  # the client went away before the response was complete
    disconnected_at: float | None = None
    finished_at: float | None = None
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _server_closed: bool = field(default=False, repr=False)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.body or {}).get("messages") or []) if isinstance(self.body, dict) else []

    @property
    def user_text(self) -> str:
        return last_user_text(self.body) if isinstance(self.body, dict) else ""

    @property
    def first_token_at(self) -> float | None:
        return self.token_times[0] if self.token_times else None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait_done(self, timeout: float = 2.0) -> bool:
        """Until the server finished with this request (answered, failed, or saw the client leave)."""
        return await wait_until(self._done.is_set, timeout)


async def wait_until(predicate: Callable[[], bool], timeout: float, poll_s: float = 0.001) -> bool:
    """Poll ``predicate`` (thread-safe reads) until true or ``timeout``; works whichever loop runs the server."""
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() >= deadline:
            return False
        await asyncio.sleep(poll_s)
    return True


def closed_port_url() -> str:
    """A ``/v1`` base URL on a local port nothing listens on: connecting is refused (ECONNREFUSED)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class _CloseDelimited:
    """A 200 response whose body ends when the server closes the connection (HTTP/1.1 without
    ``Content-Length`` or chunked encoding, ``Connection: close``), written straight on the transport: aiohttp
    itself always chunks a body of unknown length. Only :meth:`ScriptedEndpoint._drop` ends it."""

    def __init__(self, request: web.Request, headers: dict[str, str]) -> None:
        self.transport = request.transport
        head = {**headers, "Connection": "close", "Server": "scripted-endpoint"}
        lines = ["HTTP/1.1 200 OK", *(f"{k}: {v}" for k, v in head.items())]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def send(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the client went away")
        self.transport.write(data)

    async def write(self, data: bytes) -> None:
        self.send(data)


class _ServerClosed(Exception):
    """The script told the server to drop the connection (refuse, cut): not a client disconnect."""


class ScriptedEndpoint:
    """The server. ``push()`` queues scripts; ``requests`` records what arrived.

    ``default`` is used when the queue is empty: a :class:`Script` or a callable
    ``script(request_json) -> Script | None`` (None: echo). Queued items may be callables too.
    """

    def __init__(self, default: Any = None, *, model: str = "scripted-model", host: str = "127.0.0.1") -> None:
        self.default = default if default is not None else Script()
        self.model = model
        self.host = host
        self.port: int | None = None
        self.requests: list[RecordedRequest] = []
        self._queue: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self._active: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # -- scripting and records ---------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the scripted endpoint is not started")
        return f"http://{self.host}:{self.port}/v1"

    def push(self, *scripts: Any) -> ScriptedEndpoint:
        """Queue scripts for the next requests, in order."""
        with self._lock:
            self._queue.extend(scripts)
        return self

    def reset(self) -> None:
        """Forget queued scripts and recorded requests."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def open_connections(self) -> int:
        """HTTP connections currently open to the server (kept-alive idle ones included)."""
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0

    @property
    def active_requests(self) -> int:
        """Requests whose handler is still running (an answer in progress or a hang)."""
        return len(self._active)

    async def wait_for_requests(self, n: int, timeout: float = 2.0) -> list[RecordedRequest]:
        """The first ``n`` chat requests, waiting up to ``timeout`` for them to arrive."""
        if not await wait_until(lambda: len(self.chat_requests) >= n, timeout):
            raise TimeoutError(f"expected {n} chat requests, got {len(self.chat_requests)} in {timeout}s")
        return self.chat_requests[:n]

    def _next_script(self, body: dict[str, Any]) -> Script:
        with self._lock:
            src = self._queue.popleft() if self._queue else self.default
        script = src(body) if callable(src) and not isinstance(src, Script) else src
        return script if isinstance(script, Script) else Script()

    # -- lifecycle: same loop --------------------------------------------------------------
    async def start(self) -> ScriptedEndpoint:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        # handler_cancellation: a client disconnect cancels the handler at once, so it is seen
        # (and timed) even while the script is sleeping between tokens
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        self._stopping = False
        return self

    async def stop(self) -> None:
        """Cancel hanging handlers and close every connection."""
        self._stopping = True
        tasks = list(self._active)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ScriptedEndpoint:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- lifecycle: background thread ------------------------------------------------------
    def start_in_thread(self, timeout: float = 5.0) -> ScriptedEndpoint:
        """Run the server on its own event loop in a daemon thread (for sync code and benchmarks)."""
        if self._thread is not None:
            raise RuntimeError("already running in a thread")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="scripted-endpoint", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout)
        return self

    def stop_thread(self, timeout: float = 5.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> ScriptedEndpoint:
        return self.start_in_thread()

    def __exit__(self, *exc: object) -> None:
        self.stop_thread()

    # -- handlers --------------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "scripted"}]}
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        arrived = time.perf_counter()
        task = asyncio.current_task()
        assert task is not None
        self._active.add(task)
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        rec = RecordedRequest(request.method, request.path, body, dict(request.headers), arrived)
        with self._lock:
            self.requests.append(rec)
        try:
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                rec.status = 400
                return web.json_response({"error": {"message": "body must be JSON with messages"}}, status=400)
            rec.script = script = self._next_script(body)
            if body.get("stream"):
                return await self._stream(request, rec, script)
            return await self._complete(request, rec, script)
        except asyncio.CancelledError:
            if not self._stopping and not rec._server_closed and not rec.completed:
                rec.disconnected, rec.disconnected_at = True, time.perf_counter()
            raise
        except ConnectionResetError:
            if not rec._server_closed:
                rec.disconnected, rec.disconnected_at = True, time.perf_counter()
            raise
        finally:
            rec.finished_at = time.perf_counter()
            rec._done.set()
            self._active.discard(task)

    async def _sleep_until(self, deadline: float) -> None:
        delay = deadline - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _drop(self, request: web.Request, rec: RecordedRequest) -> None:
        """Close the connection from the server side and wait for aiohttp to cancel the handler."""
        rec._server_closed = True
        if request.transport is not None:
            request.transport.close()
        await asyncio.Event().wait()  # connection_lost cancels us

    def _error(self, rec: RecordedRequest, status: int, message: str, headers: dict[str, str]) -> web.Response:
        rec.status, rec.completed = status, True
        kind = "rate_limit_exceeded" if status == 429 else "server_error"
        return web.json_response(
            {"error": {"message": message, "type": kind, "code": kind}}, status=status, headers=headers
        )

    async def _pre_fault(self, request: web.Request, rec: RecordedRequest, script: Script) -> web.Response | None:
        if script.fault == "refuse":
            await self._drop(request, rec)
        if script.fault == "hang":
            await asyncio.Event().wait()
        if script.fault in ("http_500", "http_429"):
            await self._sleep_until(rec.arrived + script.ttft_s)
            if script.fault == "http_500":
                return self._error(rec, 500, "scripted internal server error", {})
            return self._error(rec, 429, "scripted rate limit", {"Retry-After": f"{script.retry_after_s:g}"})
        return None

    def _chunk(
        self,
        cid: str,
        created: int,
        delta: dict[str, Any] | None,
        finish: str | None = None,
        usage: dict[str, int] | None = None,
    ) -> bytes:
        data: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [],
        }
        if delta is not None:
            data["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if usage is not None:
            data["usage"] = usage
        return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"

    def _usage(self, body: dict[str, Any], script: Script, completion: int) -> dict[str, int]:
        if script.usage is not None:
            u = dict(script.usage)
            u.setdefault("total_tokens", u.get("prompt_tokens", 0) + u.get("completion_tokens", 0))
            return u
        prompt = sum(len(_content_text(m.get("content")).split()) for m in body.get("messages", []))
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _new_id(self) -> str:
        self._counter += 1
        return f"chatcmpl-scripted-{self._counter}"

    async def _stream(self, request: web.Request, rec: RecordedRequest, script: Script) -> web.StreamResponse:
        early = await self._pre_fault(request, rec, script)
        if early is not None:
            return early
        body: dict[str, Any] = rec.body
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        rec.status = 200
        if script.fault == "cut_clean":
            resp: web.StreamResponse | _CloseDelimited = _CloseDelimited(request, headers)
        else:
            resp = web.StreamResponse(status=200, headers=headers)
            await resp.prepare(request)
        cid, created = self._new_id(), int(time.time())
        deltas = script.deltas(body)
        gap = script.token_gap_s
        events: list[tuple[str, bytes]] = []  # (kind, payload): "token" events are counted and timed
        for i, tok in enumerate(deltas):
            delta = {"role": "assistant", "content": tok} if i == 0 else {"content": tok}
            events.append(("token", self._chunk(cid, created, delta)))
        for n, call in enumerate(script.tool_calls):
            args = call.arguments_json
            k = max(1, call.pieces)
            size = -(-len(args) // k) if args else 0
            parts = [args[j : j + size] for j in range(0, len(args), size)] if size else [""]
            head: dict[str, Any] = {
                "index": n,
                "id": call.id or f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            first: dict[str, Any] = {"tool_calls": [head]}
            if not deltas and n == 0:
                first = {"role": "assistant", "content": None, "tool_calls": [head]}
            events.append(("tool", self._chunk(cid, created, first)))
            for part in parts:
                piece = {"tool_calls": [{"index": n, "function": {"arguments": part}}]}
                events.append(("tool", self._chunk(cid, created, piece)))
        n_tokens = 0
        for i, (kind, payload) in enumerate(events):
            if script.fault in ("cut", "cut_clean", "malformed") and n_tokens >= script.after and kind == "token":
                break
            await self._sleep_until(rec.arrived + script.ttft_s + i * gap)
            await resp.write(payload)
            if kind == "token":
                rec.token_times.append(time.perf_counter())
                rec.tokens_sent.append(deltas[n_tokens])
                n_tokens += 1
        if script.fault == "cut":
            await self._drop(request, rec)
        if isinstance(resp, _CloseDelimited):  # cut_clean: the body ends here, cleanly
            await self._drop(request, rec)
        if script.fault == "malformed":
            await self._sleep_until(rec.arrived + script.ttft_s + n_tokens * gap)
            await resp.write(b'data: {"id": "broken", "choices": [{"delta": {"content": "x"\n\n')
        finish = script.finish_reason or ("tool_calls" if script.tool_calls else "stop")
        await resp.write(self._chunk(cid, created, {}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(self._chunk(cid, created, None, usage=self._usage(body, script, n_tokens)))
        await resp.write(b"data: [DONE]\n\n")
        rec.completed = True
        await resp.write_eof()
        return resp

    async def _complete(self, request: web.Request, rec: RecordedRequest, script: Script) -> web.StreamResponse:
        early = await self._pre_fault(request, rec, script)
        if early is not None:
            return early
        body: dict[str, Any] = rec.body
        deltas = script.deltas(body)
        await self._sleep_until(rec.arrived + script.ttft_s + max(0, len(deltas) - 1) * script.token_gap_s)
        if script.fault == "cut":
            await self._drop(request, rec)
        if script.fault == "cut_clean":
            rec.status = 200
            cut = json.dumps({"id": self._new_id(), "choices": [{"message": {"content": "".join(deltas)}}]})
            _CloseDelimited(request, {"Content-Type": "application/json"}).send(cut[: len(cut) // 2].encode())
            await self._drop(request, rec)
        if script.fault == "malformed":
            rec.status, rec.completed = 200, True
            return web.Response(text='{"id": "broken", "choices": [', content_type="application/json")
        message: dict[str, Any] = {"role": "assistant", "content": "".join(deltas) if deltas else None}
        if script.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id or f"call_{uuid.uuid4().hex[:12]}",
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_json},
                }
                for c in script.tool_calls
            ]
        now = time.perf_counter()
        rec.token_times.extend(now for _ in deltas)
        rec.tokens_sent.extend(deltas)
        rec.status, rec.completed = 200, True
        finish = script.finish_reason or ("tool_calls" if script.tool_calls else "stop")
        return web.json_response(
            {
                "id": self._new_id(),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": self._usage(body, script, len(deltas)),
            }
        )


class EndpointProcess:
    """The scripted endpoint in a child process (one fixed script), so it never shares the GIL with
    the code being measured: for throughput benchmarks and soak tests."""

    def __init__(self, text: str = "Sure.", ttft_s: float = 0.0, gap_s: float = 0.0) -> None:
        self.args = ["--text", text, "--ttft", str(ttft_s), "--gap", str(gap_s)]
        self.proc: Any = None
        self.base_url = ""

    def __enter__(self) -> EndpointProcess:
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workbench.faults", *self.args], stdout=subprocess.PIPE, text=True
        )
        self.base_url = self.proc.stdout.readline().strip()
        if not self.base_url.startswith("http"):
            self.proc.kill()
            raise RuntimeError("the scripted endpoint process did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)
