"""The scripted OpenAI-compatible endpoint, driven by the real ``openai`` client and LiveKit's OpenAI plugin."""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import httpx2
import openai
import openai.resources
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from livekit.agents import llm
from livekit.plugins import openai as lk_openai

from workbench.testing import Script, ScriptedEndpoint, ToolCall, closed_port_url, split_tokens

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "When do you open?"}]


@pytest.fixture
async def ep():
    async with ScriptedEndpoint() as server:
        yield server


@pytest.fixture
async def client(ep: ScriptedEndpoint):
    c = openai.AsyncClient(base_url=ep.base_url, api_key="sk-test", max_retries=0)
    yield c
    await c.close()


async def _stream(client: openai.AsyncClient, **kw) -> tuple[list[str], list[float], list, float]:
    """Deltas, their arrival times, usage chunks, and the request start time."""
    t0 = time.perf_counter()
    stream = await client.chat.completions.create(model="m", messages=MSGS, stream=True, **kw)
    deltas, times, usages = [], [], []
    async for chunk in stream:
        if chunk.usage is not None:
            usages.append(chunk.usage)
        if chunk.choices and chunk.choices[0].delta.content:
            deltas.append(chunk.choices[0].delta.content)
            times.append(time.perf_counter())
    return deltas, times, usages, t0


async def test_streams_scripted_tokens_in_order_with_usage(ep: ScriptedEndpoint, client: openai.AsyncClient) -> None:
    ep.push(Script(text="We open at eight.", usage={"prompt_tokens": 21, "completion_tokens": 5}))
    deltas, _, usages, _ = await _stream(client, stream_options={"include_usage": True})
    assert deltas == ["We", " open", " at", " eight."]
    assert len(usages) == 1
    assert (usages[0].prompt_tokens, usages[0].completion_tokens, usages[0].total_tokens) == (21, 5, 26)
    (rec,) = ep.chat_requests
    assert rec.completed and not rec.disconnected and rec.status == 200
    assert rec.tokens_sent == deltas
    assert rec.messages == MSGS and rec.user_text == "When do you open?"
    assert rec.headers["Authorization"] == "Bearer sk-test"


async def test_usage_only_when_asked_and_counted_by_default(ep: ScriptedEndpoint, client: openai.AsyncClient) -> None:
    _, _, usages, _ = await _stream(client)
    assert usages == []
    deltas, _, usages, _ = await _stream(client, stream_options={"include_usage": True})
    # default usage: words in the prompt, tokens actually sent
    assert (usages[0].prompt_tokens, usages[0].completion_tokens) == (6, len(deltas))


async def test_default_answer_echoes_the_user(ep: ScriptedEndpoint, client: openai.AsyncClient) -> None:
    deltas, _, _, _ = await _stream(client)
    assert "".join(deltas) == "You said: When do you open?"


async def test_queue_then_default_then_callable(client: openai.AsyncClient) -> None:
    seen: list[dict] = []

    def by_request(body: dict) -> Script:
        seen.append(body)
        return Script(text=f"{len(body['messages'])} messages")

    async with ScriptedEndpoint(by_request) as server:
        c = openai.AsyncClient(base_url=server.base_url, api_key="k", max_retries=0)
        server.push(Script(text="first"), Script(text="second"))
        answers = []
        for _ in range(3):
            deltas, _, _, _ = await _stream(c)
            answers.append("".join(deltas))
        await c.close()
    assert answers == ["first", "second", "2 messages"]
    assert seen[0]["messages"] == MSGS and seen[0]["stream"] is True


async def test_tokens_keep_a_schedule_fixed_at_arrival(
    ep: ScriptedEndpoint, client: openai.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Token ``i`` is due at ``arrived + ttft + i * gap``, is never sent before that, and a late token does not
    push the rest back (no drift): the tokens already due after it go out without waiting."""
    real_sleep_until = ep._sleep_until
    due: list[tuple[float, bool]] = []  # (deadline, already past when the server reached it)

    async def sleep_until(deadline: float) -> None:
        due.append((deadline, time.perf_counter() >= deadline))
        await real_sleep_until(deadline)
        if len(due) == 3:
            time.sleep(0.05)  # blocks the loop: token 2 leaves late, after the deadlines of tokens 3 and 4

    monkeypatch.setattr(ep, "_sleep_until", sleep_until)
    ep.push(Script(text="a b c d e f", ttft_s=0.05, gap_s=0.02))
    deltas, times, _, t0 = await _stream(client)
    rec = ep.chat_requests[-1]
    assert deltas == rec.tokens_sent == ["a", " b", " c", " d", " e", " f"]
    assert [d for d, _ in due] == [rec.arrived + 0.05 + i * 0.02 for i in range(6)]
    assert [past for _, past in due][3:5] == [True, True]
    # never early, in order, and each received after it was sent
    assert t0 <= rec.arrived
    assert all(sent >= d for sent, (d, _) in zip(rec.token_times, due, strict=True)), (rec.token_times, due)
    assert rec.token_times == sorted(rec.token_times)
    assert all(got >= sent for got, sent in zip(times, rec.token_times, strict=True))


async def test_client_time_to_first_chunk_matches_the_scripted_ttft(
    ep: ScriptedEndpoint, client: openai.AsyncClient
) -> None:
    """Measurement validity, so timed: what a client measures is the scripted TTFT plus the transport."""
    await _stream(client)  # open the keep-alive connection
    client_ttfc = []
    for _ in range(3):
        ep.push(Script(text="a b c d e f", ttft_s=0.05, gap_s=0.02))
        _, times, _, t0 = await _stream(client)
        client_ttfc.append(times[0] - t0)
    assert 0.05 <= statistics.median(client_ttfc) < 0.075, client_ttfc  # transport: ~2 ms idle, 20 under load


async def test_non_streaming_answer(ep: ScriptedEndpoint, client: openai.AsyncClient) -> None:
    ep.push(Script(text="Eight to six.", ttft_s=0.02))
    r = await client.chat.completions.create(model="m", messages=MSGS)
    rec = ep.chat_requests[0]
    assert rec.finished_at is not None and rec.finished_at >= rec.arrived + 0.02  # not answered before it was due
    assert r.choices[0].message.content == "Eight to six."
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.completion_tokens == 3


async def test_models_list(ep: ScriptedEndpoint, client: openai.AsyncClient) -> None:
    models = await client.models.list()
    assert [m.id for m in models.data] == ["scripted-model"]


async def test_rejects_a_body_without_messages(ep: ScriptedEndpoint) -> None:
    async with httpx2.AsyncClient() as h:
        r = await h.post(f"{ep.base_url}/chat/completions", content=b"not json")
    assert r.status_code == 400
    assert ep.chat_requests[0].body is None


async def test_http_500(ep: ScriptedEndpoint, client: openai.AsyncClient) -> None:
    ep.push(Script(fault="http_500", ttft_s=0.02))
    with pytest.raises(openai.InternalServerError):
        await _stream(client)
    rec = ep.chat_requests[0]
    assert rec.status == 500
    assert rec.finished_at is not None and rec.finished_at >= rec.arrived + 0.02  # the error waits for its ttft


async def test_http_429_with_retry_after(ep: ScriptedEndpoint, client: openai.AsyncClient) -> None:
    ep.push(Script(fault="http_429", retry_after_s=3))
    with pytest.raises(openai.RateLimitError) as info:
        await _stream(client)
    assert info.value.response.headers["Retry-After"] == "3"


async def test_refuse_drops_the_connection_without_a_response(ep: ScriptedEndpoint, client: openai.AsyncClient) -> None:
    ep.push(Script(fault="refuse"))
    with pytest.raises(openai.APIConnectionError) as info:
        await _stream(client)
    assert isinstance(info.value.__cause__, httpx2.RemoteProtocolError)
    rec = ep.chat_requests[0]
    assert await rec.wait_done()
    assert rec.status is None and not rec.disconnected  # the server hung up, not the client


async def test_closed_port_is_refused() -> None:
    c = openai.AsyncClient(base_url=closed_port_url(), api_key="k", max_retries=0)
    with pytest.raises(openai.APIConnectionError) as info:
        await c.models.list()
    assert isinstance(info.value.__cause__, httpx2.ConnectError)
    await c.close()


async def test_hang_is_seen_as_a_client_disconnect(ep: ScriptedEndpoint, client: openai.AsyncClient) -> None:
    ep.push(Script(fault="hang"))
    t0 = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(model="m", messages=MSGS, stream=True, timeout=0.1)
    rec = ep.chat_requests[0]
    assert await rec.wait_done()
    assert rec.disconnected and rec.status is None and rec.token_times == []
    # the request ended because the client's timeout ran out, not on its own
    assert rec.disconnected_at is not None and rec.disconnected_at >= t0 + 0.1


async def test_cut_after_n_tokens(ep: ScriptedEndpoint, client: openai.AsyncClient) -> None:
    ep.push(Script(fault="cut", after=2, text="one two three four"))
    got: list[str] = []
    stream = await client.chat.completions.create(model="m", messages=MSGS, stream=True)
    with pytest.raises(openai.APIConnectionError) as info:  # openai 3 wraps a body cut mid-stream
        async for chunk in stream:
            got.append(chunk.choices[0].delta.content)
    assert isinstance(info.value.__cause__, httpx2.RemoteProtocolError)
    assert got == ["one", " two"]
    rec = ep.chat_requests[0]
    assert await rec.wait_done()
    assert not rec.completed and not rec.disconnected and rec.tokens_sent == ["one", " two"]


async def test_cut_clean_closes_a_close_delimited_body_after_n_tokens(
    ep: ScriptedEndpoint, client: openai.AsyncClient
) -> None:
    """No length, no chunking, ``Connection: close``: the body ends cleanly mid-answer, so HTTP sees a whole
    response and a plain SDK client a whole answer (the workbench's chat client does not: test_cut_streams)."""
    ep.push(Script(fault="cut_clean", after=2, text="one two three four"))
    reader, writer = await asyncio.open_connection(ep.host, ep.port)
    body = json.dumps({"model": "m", "messages": MSGS, "stream": True}).encode()
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    writer.write(head.encode() + body)
    raw = await asyncio.wait_for(reader.read(), 2.0)  # to EOF: the server closed the connection
    writer.close()
    status, _, payload = raw.partition(b"\r\n\r\n")
    headers = status.decode().lower().splitlines()
    assert headers[0] == "http/1.1 200 ok" and "connection: close" in headers
    assert not any(h.startswith(("content-length:", "transfer-encoding:")) for h in headers)
    events = [e for e in payload.decode().split("\n\n") if e]
    assert [json.loads(e.removeprefix("data: "))["choices"][0]["delta"]["content"] for e in events] == ["one", " two"]
    assert b'finish_reason":"' not in payload and b"[DONE]" not in payload
    rec = ep.chat_requests[0]
    assert await rec.wait_done()
    assert not rec.completed and not rec.disconnected and rec.tokens_sent == ["one", " two"]
    # the SDK's own client ends the answer there without an error: the cut is invisible to it
    ep.push(Script(fault="cut_clean", after=2, text="one two three four"))
    deltas, _, _, _ = await _stream(client)
    assert deltas == ["one", " two"]


async def test_malformed_event_after_n_tokens(ep: ScriptedEndpoint, client: openai.AsyncClient) -> None:
    ep.push(Script(fault="malformed", after=1, text="one two"))
    got: list[str] = []
    stream = await client.chat.completions.create(model="m", messages=MSGS, stream=True)
    with pytest.raises(json.JSONDecodeError):
        async for chunk in stream:
            got.append(chunk.choices[0].delta.content)
    assert got == ["one"]


async def test_trickle_spaces_tokens(ep: ScriptedEndpoint, client: openai.AsyncClient) -> None:
    ep.push(Script(fault="trickle", trickle_gap_s=0.1, text="slow as honey"))
    deltas, times, _, _ = await _stream(client)
    assert deltas == ["slow", " as", " honey"]
    rec = ep.chat_requests[0]
    # token i leaves no earlier than i gaps after arrival, and the client gets it only after that
    assert all(sent >= rec.arrived + i * 0.1 for i, sent in enumerate(rec.token_times)), rec.token_times
    assert all(got >= sent for got, sent in zip(times, rec.token_times, strict=True))


async def test_script_validation() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        Script(fault="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Script(ttft_s=-1)


async def test_tool_call_chunks_in_openai_format(ep: ScriptedEndpoint, client: openai.AsyncClient) -> None:
    ep.push(Script(tool_calls=[ToolCall("book", {"day": "Monday", "time": "9:00"}, id="call_1", pieces=3)]))
    stream = await client.chat.completions.create(model="m", messages=MSGS, stream=True)
    name, args, ids, finish = None, "", [], None
    n_arg_chunks = 0
    async for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for tc in choice.delta.tool_calls or []:
            ids += [tc.id] if tc.id else []
            name = name or (tc.function.name if tc.function else None)
            if tc.function and tc.function.arguments:
                args += tc.function.arguments
                n_arg_chunks += 1
    assert (name, ids, finish) == ("book", ["call_1"], "tool_calls")
    assert json.loads(args) == {"day": "Monday", "time": "9:00"} and n_arg_chunks == 3


async def test_livekit_plugin_text_usage_and_tool_call(ep: ScriptedEndpoint) -> None:
    lm = lk_openai.LLM(model="scripted-model", base_url=ep.base_url, api_key="sk-test")
    ctx = llm.ChatContext()
    ctx.add_message(role="user", content="Book me in on Monday.")
    ep.push(
        Script(
            text="Booking now.",
            usage={"prompt_tokens": 9, "completion_tokens": 2},
            tool_calls=[ToolCall("book", {"day": "Monday"}, id="call_7")],
        )
    )
    text, calls, usage = "", [], None
    async with lm.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            if chunk.delta:
                text += chunk.delta.content or ""
                calls += chunk.delta.tool_calls
            usage = chunk.usage or usage
    await lm.aclose()
    assert text == "Booking now."
    assert [(c.name, json.loads(c.arguments), c.call_id) for c in calls] == [("book", {"day": "Monday"}, "call_7")]
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (9, 2, 11)
    assert ep.chat_requests[0].body["stream_options"] == {"include_usage": True}


async def test_client_disconnect_mid_answer_stops_the_answer(ep: ScriptedEndpoint) -> None:
    lm = lk_openai.LLM(model="scripted-model", base_url=ep.base_url, api_key="k")
    ctx = llm.ChatContext()
    ctx.add_message(role="user", content="Tell me everything.")
    ep.push(Script(text=" ".join(["word"] * 50), gap_s=0.02))
    stream = lm.chat(chat_ctx=ctx)
    got = 0
    async for chunk in stream:
        got += 1 if chunk.delta and chunk.delta.content else 0
        if got == 3:
            break
    closed = time.perf_counter()
    await stream.aclose()
    rec = ep.chat_requests[0]
    assert await rec.wait_done()
    assert rec.disconnected and not rec.completed
    # seen after the client closed, and nothing was sent once it was seen (50 tokens were scripted)
    assert rec.disconnected_at is not None and rec.disconnected_at >= closed
    assert all(sent <= rec.disconnected_at for sent in rec.token_times)
    assert 3 <= len(rec.tokens_sent) < 50
    await lm.aclose()
    assert ep.active_requests == 0


async def test_stop_ends_hanging_requests_itself(client: openai.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """``stop`` cancels a hanging handler before it closes the server, so it never sits out aiohttp's
    shutdown timeout."""
    server = await ScriptedEndpoint(Script(fault="hang")).start()
    c = openai.AsyncClient(base_url=server.base_url, api_key="k", max_retries=0)
    pending = asyncio.create_task(c.chat.completions.create(model="m", messages=MSGS, stream=True))
    (rec,) = await server.wait_for_requests(1)
    real_cleanup = web.AppRunner.cleanup
    at_cleanup: list[tuple[bool, int]] = []

    async def cleanup(runner: web.AppRunner) -> None:
        at_cleanup.append((rec.done, server.active_requests))
        await real_cleanup(runner)

    monkeypatch.setattr(web.AppRunner, "cleanup", cleanup)
    await server.stop()
    assert at_cleanup == [(True, 0)]
    with pytest.raises(openai.APIConnectionError):
        await pending
    assert not server.chat_requests[0].disconnected  # the server ended it, not the client
    await c.close()


def test_background_thread_mode_for_sync_code() -> None:
    with ScriptedEndpoint(Script(text="From a thread.", ttft_s=0.01)) as server:
        with httpx2.Client() as h:
            body = {"model": "m", "messages": MSGS, "stream": True}
            with h.stream("POST", f"{server.base_url}/chat/completions", json=body) as r:
                events = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        content = "".join(
            json.loads(e[6:])["choices"][0]["delta"].get("content") or ""
            for e in events[:-1]
            if json.loads(e[6:])["choices"]
        )
        assert content == "From a thread."
        assert server.chat_requests[0].completed
    assert server.port is not None
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"{server.base_url}/models")  # stopped: nothing listens any more


@given(st.text(alphabet=st.sampled_from(list("ab .\n\t")), max_size=40))
def test_split_tokens_round_trips(text: str) -> None:
    tokens = split_tokens(text)
    assert "".join(tokens) == text
    assert all(t.strip() or t is tokens[-1] for t in tokens)  # only a trailing token may be pure whitespace
