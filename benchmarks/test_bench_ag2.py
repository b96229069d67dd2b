"""What the AG2 strategies add to time-to-first-chunk over ``plain``, on an instant scripted endpoint.

Same method as ``test_bench_agents.py`` (``side_by_side`` and ``paired_overhead_ms`` of ``timing.py``):
interleaved rounds with alternating order, paired per-round differences. The endpoint answers at once
(no TTFT, no token gaps), so every millisecond in the difference is the strategy's own work: AG2's event
stream and per-turn setup for ``ag2``; for ``ag2_team`` also its extra model calls (the lead-in for
``low_latency``, helpers then the editor for ``gather``). Target: ``ag2`` <= +30 ms median over ``plain``
(the ``autogen`` target); the team figures are reported, not gated. Medians land in ``extra_info``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
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
QUESTION = "When are you open on Saturday?"
ANSWER = "We are open on Saturday from nine in the morning until one in the afternoon."
NOTES = "- Main Street: Saturday 9 am to 1 pm."
ROUNDS = 30


def instant(body: dict[str, Any]) -> Script:
    """Every call answers at once; helpers write notes, everyone else the answer."""
    return Script(text=NOTES if "You are now the" in body["messages"][0]["content"] else ANSWER)


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedEndpoint]:
    with ScriptedEndpoint(instant) as ep:  # its own loop in a thread: server work does not delay the client
        yield ep


@pytest.fixture(scope="module")
def scripted_stack(scripted: ScriptedEndpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelStack]:
    cfg = WorkbenchConfig(
        llm=EndpointConfig(kind="openai", base_url=scripted.base_url, model=scripted.model, max_tokens=48),
        state_dir=tmp_path_factory.mktemp("state"),
    )
    with ModelStack(cfg) as s:
        yield s


@pytest.mark.parametrize(
    ("spec", "limit_ms"),
    [
        ({"kind": "ag2"}, 30.0),
        ({"kind": "ag2_team", "coordination": "low_latency"}, None),
        ({"kind": "ag2_team", "coordination": "gather"}, None),
    ],
    ids=["ag2", "ag2_team-low_latency", "ag2_team-gather"],
)
def test_ttfc_overhead_over_plain(
    benchmark: Any,
    loop: asyncio.AbstractEventLoop,
    scripted_stack: ModelStack,
    spec: dict[str, Any],
    limit_ms: float | None,
) -> None:
    plain, other = build("plain", scripted_stack), build(spec, scripted_stack)
    n = iter(range(10**6))  # a new question every turn, as in the AutoGen benchmark

    async def ttfc(strategy: Any) -> float:
        return (await first_chunk(strategy, chat_ctx(INSTRUCTIONS, f"Caller {next(n)} asks: {QUESTION}")))[0]

    name = "_".join(str(v) for v in spec.values())  # names the medians in extra_info
    times = side_by_side(benchmark, loop, {"plain": lambda: ttfc(plain), name: lambda: ttfc(other)}, rounds=ROUNDS)
    overhead = paired_overhead_ms(times["plain"], times[name])
    benchmark.extra_info["overhead_median_ms"] = round(overhead, 1)
    for s in (other, plain):
        loop.run_until_complete(s.aclose())
    if limit_ms is not None:
        assert overhead <= limit_ms, f"{spec['kind']} adds {overhead:.1f} ms to the first chunk (target {limit_ms} ms)"
