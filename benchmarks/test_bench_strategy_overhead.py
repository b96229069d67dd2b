"""What the strategy base costs (issue 3): time to first chunk of ``plain`` vs the bare LiveKit OpenAI LLM.

Both run on the same scripted endpoint (fixed 50 ms time to first token, in its own thread) and the
same pooled OpenAI client from one ``ModelStack``, so the difference is our base alone: history
trimming, the trace, timeouts, the extra stream and channel hop. The paired test alternates the two
within one benchmark, which is the figure to quote on these noisy shared cores.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator

import openai.resources  # noqa: F401  (imported lazily by the client on first use; keep it out of round 1)
import pytest
from livekit.agents import llm

from workbench.core.config import EndpointConfig, WorkbenchConfig
from workbench.models import ModelStack
from workbench.strategies import build
from workbench.testing import Script, ScriptedEndpoint

TTFT_S = 0.050
ANSWER = "Our Main Street clinic opens at eight in the morning on weekdays."
ROUNDS = 30


@pytest.fixture(scope="module")
def endpoint() -> Iterator[ScriptedEndpoint]:
    with ScriptedEndpoint(Script(text=ANSWER, ttft_s=TTFT_S, gap_s=0.001)) as ep:
        yield ep


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()  # one loop for every round: pooled keep-alive connections stay valid
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def llms(endpoint: ScriptedEndpoint, loop: asyncio.AbstractEventLoop) -> Iterator[dict[str, llm.LLM]]:
    stack = ModelStack(WorkbenchConfig(llm=EndpointConfig(kind="openai", base_url=endpoint.base_url, model="m")))

    async def make() -> dict[str, llm.LLM]:  # in the loop: the stack pools one client per running loop
        return {"bare": stack.llm(), "plain": build("plain", stack)}

    made = loop.run_until_complete(make())
    for lm in made.values():  # warm both paths (imports, connection)
        loop.run_until_complete(first_chunk(lm))
    yield made
    for lm in made.values():
        loop.run_until_complete(lm.aclose())


async def first_chunk(lm: llm.LLM) -> float:
    """Seconds to the first text chunk; the rest of the answer is read too, as a voice agent would."""
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content="You are Diana, the clinic's front desk. Answer in one sentence.")
    ctx.add_message(role="user", content="When does the Main Street clinic open?")
    t0 = time.perf_counter()
    ttfc = float("nan")
    text = ""
    async with lm.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                if not text:
                    ttfc = time.perf_counter() - t0
                text += chunk.delta.content
    assert text == ANSWER
    return ttfc


def _record(benchmark, name: str, values: list[float]) -> float:
    med = statistics.median(values)
    benchmark.extra_info[f"{name}_median_ms"] = round(med * 1000, 2)
    benchmark.extra_info[f"{name}_p90_ms"] = round(sorted(values)[int(0.9 * (len(values) - 1))] * 1000, 2)
    return med


@pytest.mark.parametrize("kind", ["bare", "plain"])
def test_time_to_first_chunk(benchmark, llms: dict[str, llm.LLM], loop: asyncio.AbstractEventLoop, kind: str) -> None:
    """One row per LLM: the benchmark times the whole short answer; extra_info holds the first chunk."""
    ttfcs: list[float] = []
    benchmark.pedantic(lambda: ttfcs.append(loop.run_until_complete(first_chunk(llms[kind]))), rounds=ROUNDS)
    med = _record(benchmark, "ttfc", ttfcs)
    benchmark.extra_info["above_scripted_ttft_ms"] = round((med - TTFT_S) * 1000, 2)
    assert med >= TTFT_S


def test_paired_overhead(benchmark, llms: dict[str, llm.LLM], loop: asyncio.AbstractEventLoop) -> None:
    """Bare and plain alternate round by round; the median of the paired differences is the base's overhead."""
    bare: list[float] = []
    plain: list[float] = []

    def pair() -> None:
        bare.append(loop.run_until_complete(first_chunk(llms["bare"])))
        plain.append(loop.run_until_complete(first_chunk(llms["plain"])))

    benchmark.pedantic(pair, rounds=ROUNDS)
    _record(benchmark, "bare_ttfc", bare)
    _record(benchmark, "plain_ttfc", plain)
    diffs = [p - b for p, b in zip(plain, bare, strict=True)]
    overhead = _record(benchmark, "overhead", diffs)
    benchmark.extra_info["overhead_ratio"] = round(statistics.median(plain) / statistics.median(bare), 3)
    assert overhead < 0.025, f"the strategy base adds {overhead * 1000:.1f} ms to the first chunk"
