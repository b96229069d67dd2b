"""Replay harness costs: overhead per text turn over calling the strategy directly, text throughput,
and whether concurrent real-time voice sessions disturb each other's voice-to-voice latency.

    .venv/bin/pytest benchmarks/test_bench_replay.py --benchmark-only -s
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import pytest

from workbench.core.config import EndpointConfig, WorkbenchConfig
from workbench.faults.endpoint import EndpointProcess
from workbench.faults.speech import FixedDelaySTT
from workbench.models import ModelStack
from workbench.models.chat_client import chat_client
from workbench.replay.text import replay_text
from workbench.testing.worlds import fake_speech_stack, make_dataset, voice_dataset
from workbench.workflows import Suite, arun, load_run

TURNS = 12
ROUNDS = 25


def _cpu_s(pid: int) -> float:
    """User plus system CPU seconds of another process (Linux ``/proc``)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def instant_endpoint():
    """An instant endpoint in its own process, like any real one: in a thread of ours it would share the
    GIL, and each hand-over between it and the measured code would add latency that grows with the work
    done in between, which is an artefact of the set-up, not a cost of the harness."""
    with EndpointProcess(text="Sure.") as ep:
        yield ep


def _scripted_stack(url: str, state_dir: Path | None = None) -> ModelStack:
    """A model stack whose LLM is the scripted endpoint at ``url``."""
    llm_cfg = EndpointConfig(kind="openai", base_url=url, model="m")
    return ModelStack(WorkbenchConfig(llm=llm_cfg, **({"state_dir": state_dir} if state_dir else {})))


async def _timed_run(stack: ModelStack, dataset: Path, runs_dir: Path) -> tuple[int, float]:
    """One whole run at concurrency 16: its row count and wall time."""
    t0 = time.perf_counter()
    res = await arun(Suite(dataset=dataset, concurrency=16), runs_dir=runs_dir, stack=stack, progress=False)
    took = time.perf_counter() - t0
    return len(load_run(res.path)), took


def test_harness_overhead_per_text_turn(benchmark, instant_endpoint, tmp_path: Path) -> None:
    """Per-turn time through the harness minus calling the strategy directly, with the same strategy,
    instructions and history: ROUNDS rounds, each the conversation called directly, through a bare
    room-less ``AgentSession`` (LiveKit's own share) and through ``replay_text``, back to back; the
    medians of the paired differences."""
    from livekit.agents import llm

    from workbench.pipeline import DEFAULT_INSTRUCTIONS, build_agent, build_session
    from workbench.replay.dataset import load_dataset
    from workbench.strategies import build

    ds = load_dataset(make_dataset(tmp_path / "ds", conversations=1, turns=TURNS))
    conv = ds.conversations[0]
    wall: dict[str, list[float]] = {"direct": [], "session": [], "harness": []}

    async def measure() -> None:
        stack = _scripted_stack(instant_endpoint.base_url, tmp_path / "state")
        strategy = build("plain", stack)
        for _ in range(ROUNDS):  # interleaved, side by side
            ctx = llm.ChatContext()
            ctx.add_message(role="system", content=DEFAULT_INSTRUCTIONS)
            t0 = time.perf_counter()
            for turn in conv.turns:
                ctx.add_message(role="user", content=turn.user)
                async with strategy.chat(chat_ctx=ctx) as stream:
                    text = "".join([c.delta.content or "" async for c in stream if c.delta])
                ctx.add_message(role="assistant", content=text)
            wall["direct"].append((time.perf_counter() - t0) / TURNS)
            t0 = time.perf_counter()
            session = build_session(stack, strategy)
            await session.start(build_agent())
            for turn in conv.turns:
                await session.run(user_input=turn.user)
            await session.aclose()
            wall["session"].append((time.perf_counter() - t0) / TURNS)
            rows: list[dict] = []
            t0 = time.perf_counter()
            await replay_text(stack, strategy, conv, emit=rows.append)
            wall["harness"].append((time.perf_counter() - t0) / TURNS)
        await strategy.aclose()

    def paired(a: str, b: str) -> float:
        # each round's runs went back to back, so the machine's speed drifts less within a round than across
        return statistics.median(y - x for x, y in zip(wall[a], wall[b], strict=True)) * 1000

    benchmark.pedantic(lambda: asyncio.run(measure()), rounds=1, iterations=1)
    med = {k: statistics.median(v) * 1000 for k, v in wall.items()}
    overhead, livekit, own = paired("direct", "harness"), paired("direct", "session"), paired("session", "harness")
    benchmark.extra_info.update({f"{k}_ms": v for k, v in med.items()})
    benchmark.extra_info.update(overhead_ms=overhead, livekit_session_ms=livekit, harness_own_ms=own)
    print(
        f"\nper text turn: direct {med['direct']:.2f} ms, bare AgentSession {med['session']:.2f} ms,"
        f" harness {med['harness']:.2f} ms; overhead {overhead:.2f} ms, of which a bare AgentSession"
        f" {livekit:.2f} ms and the harness's own {own:.2f} ms (medians of {ROUNDS} paired differences)"
    )


def test_text_throughput_at_concurrency_16(benchmark, tmp_path: Path) -> None:
    """Turns per second through the whole runner (sessions, strategy, store, start-up and compaction)
    against an instant endpoint in its own process (so the endpoint does not share our GIL): the
    median of three runs after one warm-up run."""
    ds = make_dataset(tmp_path / "ds", conversations=64, turns=4)
    rates: list[float] = []
    cpu: list[tuple[float, float]] = []  # (harness CPU / wall, endpoint CPU seconds) per run
    result = {}
    server = EndpointProcess().__enter__()

    async def go() -> None:
        stack = _scripted_stack(server.base_url)
        await _timed_run(stack, ds, tmp_path / "warm")
        for k in range(3):
            c0, e0 = time.process_time(), _cpu_s(server.proc.pid)
            result["rows"], took = await _timed_run(stack, ds, tmp_path / f"r{k}")
            cpu.append(((time.process_time() - c0) / took, _cpu_s(server.proc.pid) - e0))
            rates.append(result["rows"] / took)

    try:
        benchmark.pedantic(lambda: asyncio.run(go()), rounds=1, iterations=1)
    finally:
        server.__exit__()
    rate = statistics.median(rates)
    benchmark.extra_info.update(turns=result["rows"], turns_per_s=rate, runs=rates, cpu=cpu)
    print(
        f"\ntext throughput at concurrency 16: {rate:.0f} turns/s, median of {[round(r) for r in rates]}"
        f" ({result['rows']} turns a run)"
    )
    print(
        f"harness CPU / wall per run: {[round(c, 2) for c, _ in cpu]},"
        f" endpoint CPU per run: {[round(e, 2) for _, e in cpu]} s"
    )


def test_streamed_request_cpu_aiohttp_against_httpx(benchmark, instant_endpoint) -> None:
    """CPU of one streamed chat request through the stock OpenAI client, one at a time, per transport
    (``transport: httpx``, what livekit-plugins-openai uses, and the SDK's ``aiohttp`` option): five
    interleaved rounds of 300 requests each after a warm-up round."""
    messages = [{"role": "user", "content": "When do you open?"}]
    cpu: dict[str, list[float]] = {"aiohttp": [], "httpx": []}

    async def measure() -> None:
        opened = {
            name: chat_client(base_url=instant_endpoint.base_url, api_key="k", timeout_s=10, transport=name)
            for name in cpu
        }
        for r in range(6):
            for name, client in opened.items():
                c0 = time.process_time()
                for _ in range(300):
                    stream = await client.chat.completions.create(model="m", messages=messages, stream=True)
                    async with stream:
                        async for _ in stream:
                            pass
                if r:  # the first round warms up
                    cpu[name].append((time.process_time() - c0) / 300 * 1000)
        for client in opened.values():
            await client.close()

    benchmark.pedantic(lambda: asyncio.run(measure()), rounds=1, iterations=1)
    med = {k: statistics.median(v) for k, v in cpu.items()}
    benchmark.extra_info.update({f"{k}_cpu_ms": v for k, v in med.items()})
    print(
        f"\nCPU per streamed request: aiohttp {med['aiohttp']:.2f} ms, httpx {med['httpx']:.2f} ms,"
        f" ratio {med['aiohttp'] / med['httpx']:.2f}"
    )


def test_text_throughput_at_concurrency_16_aiohttp_against_httpx(benchmark, tmp_path: Path) -> None:
    """The endpoint's two transports side by side: four rounds, each a warm-up and a timed 256-turn run
    per transport at concurrency 16."""
    transports = ("aiohttp", "httpx")
    ds = make_dataset(tmp_path / "ds", conversations=64, turns=4)
    rates: dict[str, list[float]] = {name: [] for name in transports}

    async def go(url: str) -> None:
        for r in range(4):
            for name in transports:
                cfg = EndpointConfig(kind="openai", base_url=url, model="m", transport=name)
                stack = ModelStack(WorkbenchConfig(llm=cfg))
                await _timed_run(stack, ds, tmp_path / f"warm-{name}-{r}")
                rows, took = await _timed_run(stack, ds, tmp_path / f"{name}-{r}")
                rates[name].append(rows / took)
                stack.close()

    with EndpointProcess() as server:
        benchmark.pedantic(lambda: asyncio.run(go(server.base_url)), rounds=1, iterations=1)
    med = {name: statistics.median(v) for name, v in rates.items()}
    ratios = [a / b for a, b in zip(rates["aiohttp"], rates["httpx"], strict=True)]
    benchmark.extra_info.update(turns_per_s=med, ratios=ratios)
    print(
        f"\ntext throughput at concurrency 16, side by side: aiohttp {med['aiohttp']:.0f} turns/s"
        f" {[round(x) for x in rates['aiohttp']]}, httpx {med['httpx']:.0f} turns/s"
        f" {[round(x) for x in rates['httpx']]}; ratio per round {[round(x, 2) for x in ratios]},"
        f" median {statistics.median(ratios):.2f}"
    )


def test_voice_concurrency_keeps_voice_to_voice(benchmark, tmp_path: Path) -> None:
    """4 concurrent real-time sessions with light components vs one: median voice-to-voice, side by side."""
    medians = {}

    async def go(n: int) -> float:
        root = tmp_path / f"v{n}"
        ds = voice_dataset(root / "ds", turns=3)
        lines = (ds / "conversations.jsonl").read_text().strip()
        (ds / "conversations.jsonl").write_text(
            "\n".join(lines.replace('"id": "c0"', f'"id": "c{i}"') for i in range(n)) + "\n"
        )
        stt = FixedDelaySTT(delay_s=0.1, text="question")
        with EndpointProcess(text="Sure, we open at eight.", ttft_s=0.15) as ep:  # its own process: no shared GIL
            suite = Suite(dataset=ds, mode="voice")
            suite.voice.concurrency = n
            res = await arun(suite, runs_dir=root / "runs", stack=fake_speech_stack(ep, root, stt), progress=False)
        return float(load_run(res.path)["v2v_s"].median())

    def both() -> None:
        medians[1] = asyncio.run(go(1))
        medians[4] = asyncio.run(go(4))

    benchmark.pedantic(both, rounds=1, iterations=1)
    ratio = medians[4] / medians[1]
    benchmark.extra_info.update(v2v_1_ms=medians[1] * 1000, v2v_4_ms=medians[4] * 1000, ratio=ratio)
    print(
        f"\nvoice-to-voice median: 1 session {medians[1] * 1000:.0f} ms, 4 sessions {medians[4] * 1000:.0f} ms,"
        f" ratio {ratio:.3f}"
    )


def test_agent_session_floor_per_text_turn(benchmark, tmp_path: Path) -> None:
    """LiveKit's own cost per text turn: an in-process strategy that answers at once (no HTTP), called
    directly, through a bare room-less ``AgentSession`` and through ``replay_text``; CPU per turn."""
    from livekit.agents import Agent, AgentSession, llm

    from workbench.replay.dataset import load_dataset
    from workbench.strategies import Strategy

    class Instant(Strategy):
        kind = "instant"

        async def generate(self, turn):  # type: ignore[no-untyped-def]
            yield "Sure."

    conv = load_dataset(make_dataset(tmp_path / "ds", conversations=1, turns=TURNS)).conversations[0]
    cpu: dict[str, list[float]] = {"direct": [], "session": [], "replay_text": []}

    async def measure() -> None:
        s = Instant()
        for _ in range(25):
            c0 = time.process_time()
            ctx = llm.ChatContext()
            for t in conv.turns:
                ctx.add_message(role="user", content=t.user)
                async with s.chat(chat_ctx=ctx) as st:
                    ctx.add_message(role="assistant", content="".join([c.delta.content or "" async for c in st]))
            cpu["direct"].append((time.process_time() - c0) / TURNS)
            c0 = time.process_time()
            session = AgentSession(vad=None, llm=s.for_session(), turn_handling={"turn_detection": "manual"})
            await session.start(Agent(instructions="x"))
            for t in conv.turns:
                await session.run(user_input=t.user)
            await session.aclose()
            cpu["session"].append((time.process_time() - c0) / TURNS)
            c0 = time.process_time()
            await replay_text(None, s, conv, emit=lambda row: None)  # type: ignore[arg-type]
            cpu["replay_text"].append((time.process_time() - c0) / TURNS)

    benchmark.pedantic(lambda: asyncio.run(measure()), rounds=1, iterations=1)
    med = {k: statistics.median(v[5:]) * 1000 for k, v in cpu.items()}
    benchmark.extra_info.update({f"{k}_cpu_ms": v for k, v in med.items()})
    print("\nCPU per text turn, instant in-process strategy: " + ", ".join(f"{k} {v:.2f} ms" for k, v in med.items()))


def test_text_session_start_and_close(benchmark, tmp_path: Path) -> None:
    """CPU to start and close one text session, with AgentSession's default VAD and with ``vad=None``
    (what ``build_session`` passes), side by side."""
    from livekit.agents import AgentSession

    from workbench.pipeline import build_agent
    from workbench.strategies import build

    stack = _scripted_stack("http://127.0.0.1:9/v1", tmp_path / "state")  # never called: start and close only
    cpu: dict[str, list[float]] = {"default_vad": [], "vad_none": []}

    async def measure() -> None:
        strategy = build("plain", stack)
        for _ in range(200):
            for name, kw in (("default_vad", {}), ("vad_none", {"vad": None})):
                c0 = time.process_time()
                session = AgentSession(llm=strategy.for_session(), turn_handling={"turn_detection": "manual"}, **kw)
                await session.start(build_agent())
                await session.aclose()
                cpu[name].append(time.process_time() - c0)

    benchmark.pedantic(lambda: asyncio.run(measure()), rounds=1, iterations=1)
    med = {k: statistics.median(v[20:]) * 1000 for k, v in cpu.items()}
    benchmark.extra_info.update({f"{k}_cpu_ms": v for k, v in med.items()})
    print(f"\ntext session start and close: default VAD {med['default_vad']:.2f} ms, vad=None {med['vad_none']:.2f} ms")
