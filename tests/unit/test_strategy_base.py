"""The shared strategy machinery (``strategies/base.py``) through ``plain``, against a scripted endpoint.

Real HTTP, the real ``openai`` client and LiveKit plugin underneath; only the model is scripted.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import openai.resources  # noqa: F401  (the client imports it lazily on first use: ~0.5 s, not a test's business)
import pytest
from livekit.agents import Agent, AgentSession, APIConnectionError, function_tool, llm

from workbench.core.config import EndpointConfig, WorkbenchConfig
from workbench.faults.endpoint import wait_until
from workbench.models import ModelStack
from workbench.strategies import Strategy, StrategyOptions, StrategyTurn, TurnTrace, build, register, validate
from workbench.strategies.base import count_tokens, error_kind
from workbench.testing import Script, ScriptedEndpoint, ToolCall, closed_port_url

KEY_ENV = "SCRIPTED_TEST_KEY"
APOLOGY = StrategyOptions().apology
assert APOLOGY
count_tokens("load the tokenizer at import, not inside the first test")


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, "sk-scripted-123")
    return "sk-scripted-123"


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedEndpoint]:
    async with ScriptedEndpoint() as ep:
        yield ep


@pytest.fixture
async def backup() -> AsyncIterator[ScriptedEndpoint]:
    async with ScriptedEndpoint(Script(text="Backup answer."), model="backup-model") as ep:
        yield ep


def make_stack(base_url: str, backup_url: str | None = None) -> ModelStack:
    endpoints = {}
    if backup_url:
        endpoints["backup"] = EndpointConfig(kind="openai", base_url=backup_url, model="backup-model")
    cfg = EndpointConfig(kind="openai", base_url=base_url, model="scripted-model", api_key_env=KEY_ENV)
    return ModelStack(WorkbenchConfig(llm=cfg, endpoints=endpoints))


def plain(base_url: str, backup_url: str | None = None, **options) -> Strategy:
    return build({"kind": "plain", **options}, make_stack(base_url, backup_url))


def chat_ctx(*turns: str, system: str | None = "You are Diana, the clinic's front desk.") -> llm.ChatContext:
    """Alternating user/assistant turns, ending with the user's."""
    ctx = llm.ChatContext()
    if system:
        ctx.add_message(role="system", content=system)
    for i, text in enumerate(turns):
        ctx.add_message(role="user" if (len(turns) - i) % 2 else "assistant", content=text)
    return ctx


async def answer(strategy: Strategy, ctx: llm.ChatContext, **kw) -> tuple[str, list[llm.ChatChunk], TurnTrace]:
    chunks = []
    async with strategy.chat(chat_ctx=ctx, **kw) as stream:
        async for chunk in stream:
            chunks.append(chunk)
    text = "".join(c.delta.content or "" for c in chunks if c.delta)
    trace = strategy.trace_for(ctx.items[-1].id)
    assert trace is not None
    return text, chunks, trace


async def test_streams_each_chunk_as_it_arrives(upstream: ScriptedEndpoint, api_key: str) -> None:
    words = "We open at eight in the morning on weekdays."
    upstream.push(Script(text=words, ttft_s=0.03, gap_s=0.02))
    s = plain(upstream.base_url)
    arrivals: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    async with s.chat(chat_ctx=chat_ctx("When do you open?")) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                arrivals.append((time.perf_counter(), chunk.delta.content))
    rec = upstream.chat_requests[0]
    assert [a[1] for a in arrivals] == rec.tokens_sent  # in order, one chunk per upstream token
    assert "".join(a[1] for a in arrivals) == words
    # nothing buffered: each chunk reaches us before the upstream sends the next one
    assert all(arrivals[i][0] < rec.token_times[i + 1] for i in range(len(arrivals) - 1))
    assert arrivals[0][0] < rec.token_times[-1] - 0.1
    trace = s.trace_for(stream.chat_ctx.items[-1].id)
    assert trace is not None and trace.error_kind is None
    # the injected TTFT, and the first chunk stamped after the upstream sent it and before we received it
    assert t0 <= trace.started and trace.first_chunk_s is not None and trace.first_chunk_s >= 0.03
    assert rec.token_times[0] <= trace.started + trace.first_chunk_s <= arrivals[0][0]
    assert rec.headers["Authorization"] == f"Bearer {api_key}"  # the key came from the environment
    await s.aclose()


@pytest.mark.parametrize("how", ["close", "cancel"])
async def test_stopping_mid_answer_cancels_upstream_promptly(upstream: ScriptedEndpoint, how: str) -> None:
    upstream.push(Script(text=" ".join(["word"] * 100), gap_s=0.01))
    s = plain(upstream.base_url)
    ctx = chat_ctx("Tell me everything.")
    got = asyncio.Event()
    stream = s.chat(chat_ctx=ctx)

    async def consume() -> None:
        n = 0
        async with stream:
            async for _ in stream:
                n += 1
                if n == 3:
                    got.set()

    task = asyncio.create_task(consume())
    await got.wait()
    stopped = time.perf_counter()
    if how == "close":
        await stream.aclose()
    else:
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    rec = upstream.chat_requests[0]
    assert await rec.wait_done(1.0)
    assert rec.disconnected and not rec.completed
    assert rec.disconnected_at is not None and rec.disconnected_at - stopped < 0.1
    assert len(rec.tokens_sent) < 20
    # the connection was dropped (the server drops it from its list a moment after seeing the disconnect)
    assert upstream.active_requests == 0 and await wait_until(lambda: upstream.open_connections == 0, 0.1)
    trace = s.trace_for(ctx.items[-1].id)
    assert trace is not None and trace.error_kind == "cancelled"
    await s.aclose()


# fault -> (script or None for a refused connection, expected error_kind, text already spoken?)
FAULTS = {
    "timeout": (Script(fault="hang"), "timeout", False),
    "http_500": (Script(fault="http_500"), "http_500", False),
    "refused": (None, "connection", False),
    "stream_cut": (Script(fault="cut", after=2, text="We open at eight."), "stream_cut", True),
    "malformed": (Script(fault="malformed", after=0), "malformed", False),
}


async def _faulty(upstream: ScriptedEndpoint, fault: str) -> str:
    script = FAULTS[fault][0]
    if script is None:
        return closed_port_url()
    upstream.push(script)
    return upstream.base_url


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault_falls_back_to_another_strategy(
    upstream: ScriptedEndpoint, backup: ScriptedEndpoint, fault: str
) -> None:
    base_url = await _faulty(upstream, fault)
    fb = {"kind": "plain", "name": "plain-backup", "endpoint": "backup"}
    s = plain(base_url, backup.base_url, first_chunk_timeout_s=0.2, fallback=fb)
    ctx = chat_ctx("When do you open?")
    text, _, trace = await answer(s, ctx)
    _, kind, partial = FAULTS[fault]
    assert text.endswith("Backup answer.")
    assert text == ("We open Backup answer." if partial else "Backup answer.")
    assert (trace.error_kind, trace.fallback, trace.partial) == (kind, "plain-backup", partial)
    (rec,) = backup.chat_requests
    assert rec.user_text == "When do you open?" and rec.body["model"] == "backup-model"
    await s.aclose()


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault_without_fallback_speaks_the_apology(upstream: ScriptedEndpoint, fault: str) -> None:
    s = plain(await _faulty(upstream, fault), first_chunk_timeout_s=0.2)
    text, _, trace = await answer(s, chat_ctx("When do you open?"))
    _, kind, partial = FAULTS[fault]
    assert text == (f"We open {APOLOGY}" if partial else APOLOGY)
    assert (trace.error_kind, trace.fallback, trace.partial) == (kind, "apology", partial)
    await s.aclose()


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault_without_apology_fails_the_turn(upstream: ScriptedEndpoint, fault: str) -> None:
    s = plain(await _faulty(upstream, fault), first_chunk_timeout_s=0.2, apology=None)
    ctx = chat_ctx("When do you open?")
    with pytest.raises(APIConnectionError, match=FAULTS[fault][1]):
        await answer(s, ctx)
    trace = s.trace_for(ctx.items[-1].id)
    assert trace is not None and trace.error_kind == FAULTS[fault][1] and trace.fallback is None
    await s.aclose()


async def test_failing_fallback_ends_in_the_apology(upstream: ScriptedEndpoint, backup: ScriptedEndpoint) -> None:
    upstream.push(Script(fault="http_500"))
    backup.push(Script(fault="http_500"))
    fb = {"kind": "plain", "name": "plain-backup", "endpoint": "backup", "apology": None}
    s = plain(upstream.base_url, backup.base_url, fallback=fb)
    text, _, trace = await answer(s, chat_ctx("Hello?"))
    assert text == APOLOGY
    assert trace.error_kind == "http_500" and trace.notes["fallback_error"] == "http_500"
    await s.aclose()


def test_error_kind_names() -> None:
    assert error_kind(TimeoutError()) == "timeout"
    assert error_kind(ConnectionRefusedError()) == "connection"
    assert error_kind(json.JSONDecodeError("x", "", 0)) == "malformed"
    wrapped = APIConnectionError("generic")
    wrapped.__cause__ = json.JSONDecodeError("x", "", 0)
    assert error_kind(wrapped) == "malformed"  # the plugin's generic wrapper is looked through
    assert error_kind(APIConnectionError("nothing underneath")) == "connection"
    assert error_kind(KeyError("x")) == "KeyError"


async def test_history_is_trimmed_to_the_budget_oldest_first(upstream: ScriptedEndpoint) -> None:
    system = "You are Diana, the front desk of Diana Health and Wellness Clinic."
    turns = [f"Turn number {i}: a message long enough to cost a dozen or so tokens." for i in range(11)]
    budget = count_tokens(system) + 3 * (count_tokens(turns[-1]) + 4) + 2  # room for the newest three items
    s = plain(upstream.base_url, history_tokens=budget)
    ctx = chat_ctx(*turns, system=system)
    _, _, trace = await answer(s, ctx)
    sent = upstream.chat_requests[0].messages
    assert sent[0] == {"role": "system", "content": system}
    assert [m["content"] for m in sent[1:]] == turns[-3:]  # the newest turns, in order
    assert sent[-1]["role"] == "user"
    assert trace.history_dropped == len(turns) - 3
    await s.aclose()


async def test_tool_calls_pass_through(upstream: ScriptedEndpoint) -> None:
    @function_tool
    async def book(day: str) -> str:
        """Book an appointment on a day."""
        return "booked"

    upstream.push(Script(tool_calls=[ToolCall("book", {"day": "Monday"}, id="call_42")]))
    s = plain(upstream.base_url)
    text, chunks, trace = await answer(s, chat_ctx("Book me in on Monday."), tools=[book])
    calls = [tc for c in chunks if c.delta for tc in c.delta.tool_calls]
    assert [(c.name, json.loads(c.arguments), c.call_id) for c in calls] == [("book", {"day": "Monday"}, "call_42")]
    assert text == "" and trace.error_kind is None and trace.first_chunk_s is not None
    assert [t["function"]["name"] for t in upstream.chat_requests[0].body["tools"]] == ["book"]
    await s.aclose()


async def test_concurrent_streams_get_their_own_answers(upstream: ScriptedEndpoint) -> None:
    upstream.default = lambda body: Script(text=f"Answer to {body['messages'][-1]['content']}", ttft_s=0.05, gap_s=0.01)
    s = plain(upstream.base_url)
    questions = [f"question {i}" for i in range(8)]
    results = await asyncio.gather(*(answer(s, chat_ctx(q)) for q in questions))
    assert [r[0] for r in results] == [f"Answer to {q}" for q in questions]
    assert all(r[2].error_kind is None for r in results)
    recs = upstream.chat_requests
    assert len(recs) == 8 and max(r.arrived for r in recs) < min(r.finished_at for r in recs)  # truly overlapping
    await s.aclose()


async def test_aclose_releases_abandoned_streams_and_tasks() -> None:
    # the server runs in its own thread here, so every task left in this loop would be the client's
    with ScriptedEndpoint(Script(text=" ".join(["word"] * 100), gap_s=0.01)) as upstream:
        s = plain(upstream.base_url)
        before = asyncio.all_tasks()
        stream = s.chat(chat_ctx=chat_ctx("Talk to me."))
        await anext(stream)  # read one chunk, then walk away without closing
        assert len(asyncio.all_tasks()) > len(before)
        await s.aclose()
        assert asyncio.all_tasks() == before
        rec = upstream.chat_requests[0]
        assert await rec.wait_done(1.0) and rec.disconnected
        assert await wait_until(lambda: upstream.open_connections == 0, 0.1)


class Counting(Strategy):
    """A producer that records how far it has run."""

    kind = "counting-test"

    def __init__(self, n: int, **kw) -> None:
        super().__init__(**kw)
        self.n, self.produced = n, 0

    async def generate(self, turn: StrategyTurn) -> AsyncIterator[str]:
        for i in range(self.n):
            self.produced += 1
            yield f"{i} "


async def test_backpressure_bounds_how_far_the_producer_runs_ahead() -> None:
    s = Counting(200)
    s.max_buffered_chunks = 4
    taken = 0
    async with s.chat(chat_ctx=chat_ctx("Count.")) as stream:
        async for _ in stream:
            taken += 1
            await asyncio.sleep(0.001)  # a slow consumer
            assert s.produced - taken <= 4 + 1, (s.produced, taken)
            if taken == 20:
                break
        for _ in range(50):  # the consumer stalls for 50 loop turns; the producer never awaits, so an unbounded
            await asyncio.sleep(0)  # one would have run to the end in the first of them
        assert s.produced <= taken + 4 + 1
    assert s.produced < 200
    await s.aclose()


async def test_unbounded_consumer_gets_everything_in_order() -> None:
    s = Counting(200)
    text, _, trace = await answer(s, chat_ctx("Count."))
    assert text == "".join(f"{i} " for i in range(200)) and trace.error_kind is None


async def test_agent_session_run_speaks_the_scripted_answer(upstream: ScriptedEndpoint) -> None:
    upstream.push(Script(text="We open at eight on weekdays.", ttft_s=0.01))
    s = plain(upstream.base_url)
    async with AgentSession(llm=s) as session:
        await session.start(Agent(instructions="You are Diana, the clinic's front desk."))
        result = await session.run(user_input="When do you open?")
        msg = result.expect.next_event().is_message(role="assistant")
        assert msg.event().item.text_content == "We open at eight on weekdays."
        result.expect.no_more_events()
    sent = upstream.chat_requests[0].messages
    assert sent[0]["role"] == "system" and "Diana" in sent[0]["content"]
    assert sent[-1] == {"role": "user", "content": "When do you open?"}
    await s.aclose()


@register
class PoliteForTest(Strategy):
    """The contract a user writes: YAML keys as ``Config``, a ``generate``, nothing about endpoints or options."""

    kind = "polite-test"

    class Config(StrategyOptions):
        name_hint: str = "there"

    async def generate(self, turn: StrategyTurn) -> AsyncIterator[str | llm.ChatChunk]:
        yield f"Hi {self.config.name_hint}, "
        async for chunk in turn.stream():
            yield chunk


BACKUP_SPEC = {"kind": "plain", "name": "plain-backup", "endpoint": "backup"}


async def test_a_minimal_strategy_gets_endpoint_timeouts_and_fallback_from_its_yaml_keys(
    upstream: ScriptedEndpoint, backup: ScriptedEndpoint
) -> None:
    stack = make_stack(upstream.base_url, backup.base_url)
    keys = {"first_chunk_timeout_s": 0.2, "chunk_timeout_s": 0.3, "fallback": BACKUP_SPEC, "history_tokens": 321}
    s = build({"kind": "polite-test", "name": "polite", "name_hint": "Sam", **keys}, stack)
    assert isinstance(s, PoliteForTest) and s.name == "polite" and s.config.name_hint == "Sam"
    assert (s.options.first_chunk_timeout_s, s.options.chunk_timeout_s, s.prompt_budget) == (0.2, 0.3, 321)
    assert s.fallback is not None and s.fallback.name == "plain-backup" and s.endpoint.base_url == upstream.base_url

    upstream.push(Script(text="We open at eight."))  # the base's LLM on the configured endpoint
    text, _, trace = await answer(s, chat_ctx("When do you open?"))
    assert text == "Hi Sam, We open at eight." and trace.error_kind is None

    # the greeting is out, then the model hangs: the chunk timeout falls back (plain, written the same way, shows
    # the first-chunk timeout in test_fault_falls_back_to_another_strategy)
    upstream.push(Script(fault="hang"))
    t0 = time.perf_counter()
    text, _, trace = await answer(s, chat_ctx("When do you open?"))
    assert text == "Hi Sam, Backup answer."
    assert (trace.error_kind, trace.fallback, trace.partial) == ("timeout", "plain-backup", True)
    assert 0.3 <= trace.notes["recovery_s"] < time.perf_counter() - t0 < 1.5
    await s.aclose()


def test_an_unknown_yaml_key_is_a_clear_error(upstream: ScriptedEndpoint) -> None:
    stack = make_stack(upstream.base_url)
    with pytest.raises(ValueError, match=r"unknown key nme_hint \(the keys are: apology, .*name_hint"):
        build({"kind": "polite-test", "nme_hint": "Sam"}, stack)
    with pytest.raises(ValueError, match="unknown keys first_chunk_timeout, top_k"):
        validate({"kind": "polite-test", "first_chunk_timeout": 1, "top_k": 3})
    with pytest.raises(ValueError, match="unknown key nme_hint"):  # a nested strategy is checked as well
        validate({"kind": "plain", "fallback": {"kind": "polite-test", "nme_hint": "Sam"}})
    with pytest.raises(KeyError, match="'polite-tset' is not registered"):
        validate({"kind": "polite-tset"})
    assert upstream.chat_requests == []


def test_each_builtin_kind_is_registered_by_the_module_the_registry_names() -> None:
    """``build("plain")`` imports only plain's module, so the map must name every built-in's real module."""
    from workbench.strategies.registry import BUILTIN_MODULES, REGISTRY, _load_builtins

    _load_builtins()
    for kind, module in BUILTIN_MODULES.items():
        assert REGISTRY[kind].__module__ == f"workbench.strategies.{module}", kind
