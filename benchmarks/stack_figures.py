"""Figures that compare two installed stacks (e.g. livekit-agents 1.8.6 + openai 2 against 1.8.9 + openai 3).

Run by each stack's own interpreter, so it uses only the API both versions of the workbench have;
``benchmarks/test_bench_stacks.py`` runs it for both, interleaved, and reports medians and ratios.

    python benchmarks/stack_figures.py overhead|throughput|throughput_aiohttp|first_turn|cold_start|v2v
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "datasets" / "dianachat_demo"
DEMO_CONFIG = REPO / "evals" / "configs" / "fast-models.yaml"  # SmolLM2: figures about the stack, not the model


def write_dataset(root: Path, conversations: int, turns: int) -> Path:
    """A text-only dataset of ``conversations`` x ``turns`` short questions."""
    (root / "knowledge").mkdir(parents=True)
    (root / "knowledge" / "hours.md").write_text("# Hours\n\nWe are open 8 am to 6 pm on weekdays.\n")
    lines = []
    for c in range(conversations):
        turn_list = [{"user": f"question {c}.{t}", "reference": f"answer {c}.{t}"} for t in range(turns)]
        lines.append(json.dumps({"id": f"c{c}", "turns": turn_list}))
    (root / "conversations.jsonl").write_text("\n".join(lines) + "\n")
    return root


def scripted_stack(url: str, state_dir: Path, transport: str | None = None) -> Any:
    """A stack on the scripted endpoint; ``transport`` only where this version has the option (the previous
    stack always used its own aiohttp transport)."""
    from workbench.core.config import EndpointConfig, WorkbenchConfig
    from workbench.models import ModelStack

    extra = {"transport": transport} if transport and "transport" in EndpointConfig.model_fields else {}
    cfg = EndpointConfig(kind="openai", base_url=url, model="m", **extra)
    return ModelStack(WorkbenchConfig(llm=cfg, state_dir=state_dir))


async def overhead(tmp: Path, rounds: int = 15, turns: int = 12) -> dict[str, float]:
    """Per text turn: the strategy called directly, and the same conversation through ``replay_text``;
    medians over interleaved rounds and the median of the paired differences (ms)."""
    from livekit.agents import llm

    from workbench.faults.endpoint import EndpointProcess
    from workbench.pipeline import DEFAULT_INSTRUCTIONS
    from workbench.replay.dataset import load_dataset
    from workbench.replay.text import replay_text
    from workbench.strategies import build

    conv = load_dataset(write_dataset(tmp / "ds", 1, turns)).conversations[0]
    wall: dict[str, list[float]] = {"direct": [], "harness": []}
    with EndpointProcess(text="Sure.") as ep:
        stack = scripted_stack(ep.base_url, tmp / "state")
        strategy = build("plain", stack)
        for _ in range(rounds):
            ctx = llm.ChatContext()
            ctx.add_message(role="system", content=DEFAULT_INSTRUCTIONS)
            t0 = time.perf_counter()
            for turn in conv.turns:
                ctx.add_message(role="user", content=turn.user)
                async with strategy.chat(chat_ctx=ctx) as stream:
                    text = "".join([c.delta.content or "" async for c in stream if c.delta])
                ctx.add_message(role="assistant", content=text)
            wall["direct"].append((time.perf_counter() - t0) / turns)
            rows: list[dict[str, Any]] = []
            t0 = time.perf_counter()
            await replay_text(stack, strategy, conv, emit=rows.append)
            wall["harness"].append((time.perf_counter() - t0) / turns)
        await strategy.aclose()
        stack.close()
    diffs = [(h - d) * 1000 for d, h in zip(wall["direct"], wall["harness"], strict=True)]
    return {
        "direct_ms": statistics.median(wall["direct"]) * 1000,
        "harness_ms": statistics.median(wall["harness"]) * 1000,
        "overhead_ms": statistics.median(diffs),
    }


async def throughput_aiohttp(tmp: Path) -> dict[str, float]:
    """:func:`throughput` with the endpoint's aiohttp transport (the previous stack's only one)."""
    return await throughput(tmp, transport="aiohttp")


async def throughput(tmp: Path, runs: int = 3, transport: str | None = None) -> dict[str, float]:
    """Turns per second through the whole runner at concurrency 16 (64 conversations x 4 turns), against an
    instant endpoint in its own process: the median of ``runs`` runs after a warm-up run."""
    from workbench.faults.endpoint import EndpointProcess
    from workbench.workflows import Suite, arun, load_run

    ds = write_dataset(tmp / "ds", 64, 4)
    rates = []
    with EndpointProcess() as ep:
        stack = scripted_stack(ep.base_url, tmp / "state", transport)
        for k in range(runs + 1):
            t0 = time.perf_counter()
            res = await arun(Suite(dataset=ds, concurrency=16), runs_dir=tmp / f"r{k}", stack=stack, progress=False)
            took = time.perf_counter() - t0
            if k:
                rates.append(len(load_run(res.path)) / took)
        stack.close()
    return {"turns_per_s": statistics.median(rates)}


async def first_turn(tmp: Path, trials: int = 10) -> dict[str, float]:
    """First chunk of a new stack's first turn (the client is set up and connects) against its second turn,
    on an endpoint whose first token takes 20 ms: medians over ``trials`` fresh stacks (ms)."""
    from livekit.agents import llm

    from workbench.faults.endpoint import EndpointProcess
    from workbench.strategies import build

    first, second = [], []
    with EndpointProcess(text="Sure, we open at eight.", ttft_s=0.02) as ep:
        for i in range(trials):
            stack = scripted_stack(ep.base_url, tmp / f"state{i}")
            strategy = build("plain", stack)
            for into in (first, second):
                ctx = llm.ChatContext()
                ctx.add_message(role="user", content="When do you open?")
                t0 = time.perf_counter()
                took = None
                async with strategy.chat(chat_ctx=ctx) as stream:
                    async for chunk in stream:  # read to the end: the connection stays pooled for the next turn
                        if took is None and chunk.delta and chunk.delta.content:
                            took = (time.perf_counter() - t0) * 1000
                into.append(took)
            await strategy.aclose()
            stack.close()
    return {"first_turn_ttfc_ms": statistics.median(first), "second_turn_ttfc_ms": statistics.median(second)}


async def cold_start(tmp: Path) -> dict[str, float]:
    """From this process's start to the first streamed chunk of ``plain`` on the embedded model: imports,
    the llama.cpp server's start and model load, the first request (s)."""
    import psutil

    from workbench.core.config import load_config
    from workbench.models import ModelStack
    from workbench.strategies import build

    created = psutil.Process().create_time()
    from livekit.agents import llm

    cfg = load_config(DEMO_CONFIG) if DEMO_CONFIG.exists() else load_config()
    stack = ModelStack(cfg.model_copy(update={"state_dir": tmp / "state"}))
    strategy = build("plain", stack)
    ctx = llm.ChatContext()
    ctx.add_message(role="user", content="When do you open?")
    took = None
    async with strategy.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            if took is None and chunk.delta and chunk.delta.content:
                took = time.time() - created
    await strategy.aclose()
    stack.close()
    return {"cold_start_s": float(took or "nan")}


async def v2v(tmp: Path) -> dict[str, float]:
    """Voice-to-voice in real time on the embedded stack (Piper caller, Silero, Whisper, ``plain`` on SmolLM2,
    Piper answering): one demo conversation, the median over its turns (ms)."""
    from workbench.workflows import Suite, arun, load_run

    suite = Suite(
        dataset=DEMO,
        config=DEMO_CONFIG if DEMO_CONFIG.exists() else None,
        strategies={"plain": "plain"},
        mode="voice",
        voice={"variants": ["piper"], "conversations": {"ids": ["c001", "c002"]}},
    )
    res = await arun(suite, runs_dir=tmp / "runs", progress=False)
    df = load_run(res.path)
    return {"v2v_ms": float(df["v2v_s"].median() * 1000), "turns": float(len(df))}


FIGURES = {f.__name__: f for f in (overhead, throughput, throughput_aiohttp, first_turn, cold_start, v2v)}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in FIGURES:
        print(f"usage: stack_figures.py {'|'.join(FIGURES)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as d:
        import os

        os.chdir(d)  # state and run folders that a version resolves from the working directory land here
        out = asyncio.run(FIGURES[argv[0]](Path(d)))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
