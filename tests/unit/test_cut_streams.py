"""A cut stream is a failed turn, whichever way the server cuts it (issue 17).

A server that closes a close-delimited streaming response mid-answer (fault ``cut_clean``: no
``Content-Length``, no chunked encoding) leaves HTTP nothing to complain about; only the missing
``finish_reason`` and ``data: [DONE]`` show the answer was cut. The stack's chat client
(``workbench/models/chat_client.py``) raises ``StreamCut`` there, below every strategy kind, so each
records ``stream_cut``, keeps what it already said (``partial``) and takes its fallback, in text mode and in
real-time voice mode.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from agent_cases import ANSWER, NOTES, chat_ctx, run_turn

from workbench.core.config import EndpointConfig, WorkbenchConfig
from workbench.faults.endpoint import Script, ScriptedEndpoint
from workbench.models import ModelStack
from workbench.models.chat_client import StreamCut, _EndCheckingDecoder, chat_client
from workbench.scoring.faults import FAULT_TURN
from workbench.strategies.base import Passage, error_kind
from workbench.strategies.rag import RetrievalStrategy
from workbench.strategies.registry import build, validate
from workbench.workflows import load_run
from workbench.workflows.faults import BACKUP_TEXT, arun_faults
from workbench.workflows.suite import FaultSuite, load_suite

SUITE_FILE = Path(__file__).resolve().parents[2] / "evals" / "faults.yaml"
BACKUP = {"kind": "plain", "name": "backup", "endpoint": "backup"}
SAID = "Main Street"  # the primary's two tokens before the cut (ANSWER starts with them)
CUT = Script(text=ANSWER, fault="cut_clean", after=2)
KINDS: list[dict[str, Any]] = [
    {"kind": "plain"},
    {"kind": "rag"},
    {"kind": "rag_middleware"},
    {"kind": "hybrid"},
    {"kind": "autogen"},
    {"kind": "multi_agent"},
    {"kind": "multi_agent", "coordination": "gather"},
    {"kind": "ag2"},
    {"kind": "ag2_team"},
    {"kind": "ag2_team", "coordination": "gather"},
]


class FakeIndex:
    async def aretrieve(self, query: str, top_k: int = 3) -> list[Passage]:
        return [Passage("Main Street is open 8 am to 6 pm on weekdays.", "knowledge/hours.md", 0.8)][:top_k]


@pytest.fixture
async def backup() -> AsyncIterator[ScriptedEndpoint]:
    async with ScriptedEndpoint(Script(text=BACKUP_TEXT), model="scripted-backup") as ep:
        yield ep


@pytest.fixture
def stack(endpoint: ScriptedEndpoint, backup: ScriptedEndpoint, tmp_path: Path) -> Any:
    endpoint.default = answers_cut
    cfg = WorkbenchConfig(
        llm=EndpointConfig(kind="openai", base_url=endpoint.base_url, model=endpoint.model, max_tokens=48),
        endpoints={"backup": EndpointConfig(kind="openai", base_url=backup.base_url, model=backup.model)},
        state_dir=tmp_path,
    )
    with ModelStack(cfg) as s:
        yield s


def answers_cut(body: dict[str, Any]) -> Script:
    """Every answer to the caller is cut after two tokens; a team's helpers write their notes."""
    return Script(text=NOTES) if "You are now the" in body["messages"][0]["content"] else CUT


def build_with_backup(spec: dict[str, Any], stack: ModelStack) -> Any:
    """``spec`` with the backup as its fallback; a retrieval kind reads a fixed index (no embedding model)."""
    cls, name, cfg = validate(spec)
    strategy = cls(cfg, stack=stack, index=FakeIndex()) if issubclass(cls, RetrievalStrategy) else cls(cfg, stack=stack)
    strategy.bind(cfg, stack, name=name, fallback=build(BACKUP, stack))
    return strategy


@pytest.mark.usefixtures("_warm_tokenizer")
@pytest.mark.parametrize("spec", KINDS, ids=lambda s: "-".join(str(v) for v in s.values()))
async def test_a_cleanly_closed_stream_is_cut_partial_and_falls_back_in_every_kind(
    spec: dict[str, Any], stack: ModelStack, endpoint: ScriptedEndpoint, backup: ScriptedEndpoint
) -> None:
    strategy = build_with_backup(spec, stack)
    ctx = chat_ctx(("user", "When do you open?"))
    text, _ = await run_turn(strategy, ctx)
    trace = strategy.trace_for(ctx.items[-1].id)
    assert trace is not None
    assert (trace.error_kind, trace.partial, trace.fallback) == ("stream_cut", True, "backup"), trace
    assert "fallback_error" not in trace.notes
    # what the caller heard: the primary's words up to the cut, then the backup's whole answer
    assert text == f"{SAID} {BACKUP_TEXT}"
    assert backup.chat_requests and any(r.tokens_sent == ["Main", " Street"] for r in endpoint.chat_requests)
    await strategy.aclose()


@pytest.mark.usefixtures("_warm_tokenizer")
@pytest.mark.parametrize("kind", ["multi_agent", "ag2_team"])
async def test_a_gathering_helper_whose_stream_is_cut_keeps_the_kind(
    kind: str, stack: ModelStack, endpoint: ScriptedEndpoint
) -> None:
    """A cut helper: an AutoGen team run stops (nothing said yet, so not partial), an AG2 team goes on without it."""
    endpoint.default = lambda body: CUT if "You are now the researcher" in body["messages"][0]["content"] else None
    strategy = build_with_backup({"kind": kind, "coordination": "gather"}, stack)
    ctx = chat_ctx(("user", "When do you open?"))
    text, _ = await run_turn(strategy, ctx)
    trace = strategy.trace_for(ctx.items[-1].id)
    assert trace is not None
    if kind == "multi_agent":  # AutoGen reports a member's failure as a RuntimeError: its cause keeps the kind
        assert (trace.error_kind, trace.partial, trace.fallback) == ("stream_cut", False, "backup"), trace
        assert text == BACKUP_TEXT
    else:
        assert trace.error_kind is None and trace.notes["helper_errors"] == {"researcher": "stream_cut"}
        assert text == f"You said: {SAID}"  # the editor read what the helper wrote before the cut
    await strategy.aclose()


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_the_chat_client_raises_stream_cut_where_a_cut_body_does(
    endpoint: ScriptedEndpoint, transport: str
) -> None:
    client = chat_client(base_url=endpoint.base_url, api_key="k", timeout_s=5, transport=transport)  # type: ignore[arg-type]
    got: list[str] = []
    for fault in ("cut", "cut_clean"):
        endpoint.push(Script(text="one two three four", fault=fault, after=2))  # type: ignore[arg-type]
        stream = await client.chat.completions.create(
            model="m", stream=True, messages=[{"role": "user", "content": "hi"}]
        )
        with pytest.raises(openai.APIConnectionError) as info:  # the SDK wraps both alike
            async for chunk in stream:
                got.append(chunk.choices[0].delta.content or "")
        assert error_kind(info.value) == "stream_cut"
        assert isinstance(info.value.__cause__, StreamCut) == (fault == "cut_clean")
    assert got == ["one", " two"] * 2
    # a whole answer, and an interrupted read, are no cut; the connection stays usable
    stream = await client.chat.completions.create(model="m", stream=True, messages=[{"role": "user", "content": "hi"}])
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == ANSWER
    endpoint.push(Script(text="one two three four", gap_s=0.05))
    stream = await client.chat.completions.create(model="m", stream=True, messages=[{"role": "user", "content": "hi"}])
    async for _ in stream:
        break
    await stream.close()
    await client.close()


async def _events(*parts: bytes) -> list[str]:
    async def body() -> AsyncIterator[bytes]:
        for p in parts:
            yield p

    return [sse.data async for sse in _EndCheckingDecoder().aiter_bytes(body())]


async def test_an_answer_ends_with_a_finish_reason_or_done_and_a_cut_with_neither() -> None:
    token = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
    finish = b'data: {"choices":[{"index":0,"delta":{},"finish_reason": "stop"}]}\n\n'
    assert len(await _events(token, finish)) == 2  # a finish_reason without [DONE] ends the answer
    assert len(await _events(token, b"data: [DONE]\n\n")) == 2
    for parts in ((token,), (), (token, token[:20])):
        with pytest.raises(StreamCut):
            await _events(*parts)
    # a finish_reason spoken inside the content is text, not the end
    quoted = b'data: {"choices":[{"delta":{"content":"\\"finish_reason\\": \\"stop\\""},"finish_reason":null}]}\n\n'
    with pytest.raises(StreamCut):
        await _events(quoted)


async def test_a_cut_stream_in_a_voice_call_is_recorded_partial_and_recovered(tmp_path: Path) -> None:
    """The fault suite's ``cut_clean`` conversation, replayed in text and in real-time voice mode."""
    shipped = load_suite(SUITE_FILE)
    assert isinstance(shipped, FaultSuite) and "cut_clean" in shipped.faults and "cut_clean" in shipped.voice_faults
    suite = shipped.model_copy(update={"faults": ["cut_clean"], "voice_faults": ["cut_clean"], "turn_taking": []})
    res = await arun_faults(suite, runs_dir=tmp_path)
    assert res.passed, res.table[["strategy", "mode", "problems"]]
    table = res.table.set_index(["strategy", "mode"])
    assert set(table.index) == {(s, m) for s in suite.strategies for m in ("text", "voice")}
    for (strategy, mode), r in table.iterrows():
        fallback = "backup" if strategy == "plain_fallback" else "apology"
        assert (r["error_kind"], r["partial"], r["fallback"]) == ("stream_cut", True, fallback), (strategy, mode)
        assert r["next_turn_ok"] and r["recovery_s"] <= r["budget_s"], (strategy, mode)
    df = load_run(res.path)
    row = df[(df["mode"] == "voice") & (df["strategy"] == "plain_fallback") & (df["turn_index"] == FAULT_TURN)]
    assert row["answer"].iloc[0].startswith("You said:") and row["answer"].iloc[0].endswith(BACKUP_TEXT)
