"""What the AutoGen strategies add to time-to-first-chunk (issue 3).

Measured side by side in one run, interleaved round by round (the order alternates), so load on the
shared cores hits both sides alike. The scripted endpoint fixes the upstream TTFT and token gaps, so a
difference is what the strategy itself costs. Targets: ``autogen`` <= +30 ms and ``hybrid`` <= +45 ms
median over ``plain``; ``multi_agent`` low_latency reaches its first chunk >= 30 % sooner than gather,
on the scripted endpoint and on the real embedded model. Medians land in ``extra_info``.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from timing import chat_ctx, first_chunk, paired_overhead_ms, side_by_side

from workbench.core.config import EndpointConfig, WorkbenchConfig
from workbench.faults.endpoint import Script, ScriptedEndpoint
from workbench.models import ModelStack
from workbench.strategies.registry import build

INSTRUCTIONS = (
    "You are Diana, the front desk of Diana Health and Wellness Clinic. Answer in one short sentence. "
    "Main Street is open Monday to Friday from 8 am to 6 pm and Saturday from 9 am to 1 pm."
)
KNOWLEDGE = Path(__file__).resolve().parents[1] / "datasets" / "dianachat_demo" / "knowledge"
QUESTION = "When are you open on Saturday?"
ANSWER = "We are open on Saturday from nine in the morning until one in the afternoon."
NOTES = "- Main Street: Saturday 9 am to 1 pm.\n- Lakeside: Saturday 8 am to noon."
TTFT_S, GAP_S = 0.08, 0.015
ROUNDS = 15


def by_role(body: dict[str, Any]) -> Script:
    """The scripted model: every call has the same TTFT and token gaps; helpers write notes."""
    system = body["messages"][0]["content"]
    text = NOTES if "You are now the" in system else ANSWER
    return Script(text=text, ttft_s=TTFT_S, gap_s=GAP_S)


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedEndpoint]:
    with ScriptedEndpoint(by_role) as ep:  # its own loop in a thread: server work does not delay the client
        yield ep


@pytest.fixture(scope="module")
def scripted_stack(scripted: ScriptedEndpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelStack]:
    cfg = WorkbenchConfig(
        llm=EndpointConfig(kind="openai", base_url=scripted.base_url, model=scripted.model, max_tokens=48),
        state_dir=tmp_path_factory.mktemp("state"),
    )
    with ModelStack(cfg) as s:
        yield s


async def ttfc(strategy: Any, question: str = QUESTION) -> float:
    """Seconds from ``chat()`` to the first text chunk; the rest of the answer is drained."""
    return (await first_chunk(strategy, chat_ctx(INSTRUCTIONS, question)))[0]


HYBRID = {"kind": "hybrid", "knowledge": str(KNOWLEDGE)}


@pytest.mark.parametrize(("spec", "limit_ms"), [({"kind": "autogen"}, 30.0), (HYBRID, 45.0)], ids=["autogen", "hybrid"])
def test_ttfc_overhead_over_plain(
    benchmark: Any, loop: asyncio.AbstractEventLoop, scripted_stack: ModelStack, spec: dict[str, Any], limit_ms: float
) -> None:
    plain, other = build("plain", scripted_stack), build(spec, scripted_stack)
    n = iter(range(10**6))  # a new question every turn: no cached query embedding, no cached prompt

    def question() -> str:
        return f"Caller {next(n)} asks: {QUESTION}"

    runs = {"plain": lambda: ttfc(plain, question()), spec["kind"]: lambda: ttfc(other, question())}
    extra = []
    if spec["kind"] == "hybrid":  # direct RAG beside it: how much of the overhead is retrieval, not AutoGen
        rag = build({"kind": "rag", "knowledge": str(KNOWLEDGE)}, scripted_stack)
        runs["rag"] = lambda: ttfc(rag, question())
        extra.append(rag)
    times = side_by_side(benchmark, loop, runs, rounds=ROUNDS)
    overhead = paired_overhead_ms(times["plain"], times[spec["kind"]])
    benchmark.extra_info["overhead_median_ms"] = round(overhead, 1)
    if "rag" in times:
        benchmark.extra_info["rag_overhead_median_ms"] = round(paired_overhead_ms(times["plain"], times["rag"]), 1)
    benchmark.extra_info["upstream_ttft_ms"] = TTFT_S * 1000
    for s in (other, plain, *extra):
        loop.run_until_complete(s.aclose())
    assert statistics.median(times["plain"]) >= TTFT_S  # the fixed upstream TTFT is really in the figure
    assert overhead <= limit_ms, f"{spec['kind']} adds {overhead:.1f} ms to the first chunk (target {limit_ms} ms)"


def test_multi_agent_low_latency_vs_gather_scripted(
    benchmark: Any, loop: asyncio.AbstractEventLoop, scripted_stack: ModelStack
) -> None:
    gather = build({"kind": "multi_agent", "coordination": "gather"}, scripted_stack)
    low = build({"kind": "multi_agent", "coordination": "low_latency"}, scripted_stack)
    times = side_by_side(
        benchmark, loop, {"gather": lambda: ttfc(gather), "low_latency": lambda: ttfc(low)}, rounds=ROUNDS
    )
    ratio = statistics.median(times["low_latency"]) / statistics.median(times["gather"])
    benchmark.extra_info["low_latency_over_gather"] = round(ratio, 3)
    loop.run_until_complete(gather.aclose())
    loop.run_until_complete(low.aclose())
    assert ratio <= 0.7, f"low_latency first chunk is {ratio:.0%} of gather's (target <= 70%)"


@pytest.mark.timeout(1200)
def test_multi_agent_low_latency_vs_gather_real_model(
    benchmark: Any, loop: asyncio.AbstractEventLoop, stack: ModelStack
) -> None:
    """The same comparison on the embedded SmolLM2 server (one request at a time, real prompt cache)."""
    small = {"max_tokens": 24, "helper_max_tokens": 24, "lead_in_max_tokens": 20}
    small |= {"first_chunk_timeout_s": 120.0, "chunk_timeout_s": 120.0}  # shared cores can be very busy
    gather = build({"kind": "multi_agent", "coordination": "gather", **small}, stack)
    low = build({"kind": "multi_agent", "coordination": "low_latency", **small}, stack)
    times = side_by_side(benchmark, loop, {"gather": lambda: ttfc(gather), "low_latency": lambda: ttfc(low)}, rounds=4)
    ratio = statistics.median(times["low_latency"]) / statistics.median(times["gather"])
    benchmark.extra_info["low_latency_over_gather"] = round(ratio, 3)
    for s in (gather, low):
        loop.run_until_complete(s.aclose())
    assert ratio <= 0.7, f"low_latency first chunk is {ratio:.0%} of gather's (target <= 70%)"
