"""Load one component in a fresh process, run one inference, print load time and peak RSS as JSON.

Peak RSS per component needs a process of its own: in a shared process the numbers add up.
Usage: python benchmarks/probe.py {llm,stt,tts,espeak,vad,embeddings,stack}
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _server_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main(component: str) -> dict[str, float]:
    from livekit.agents import llm

    from workbench.core.config import WorkbenchConfig
    from workbench.models import ModelStack

    stack = ModelStack(WorkbenchConfig(state_dir=Path(tempfile.mkdtemp())))
    text = "Our clinic opens at eight in the morning."
    t0 = time.perf_counter()
    out: dict[str, float] = {}
    if component in ("llm", "stack"):
        ep = stack.endpoint()
        out["llm_load_s"] = time.perf_counter() - t0
        lm = stack.llm()
        ctx = llm.ChatContext()
        ctx.add_message(role="user", content="Say hello.")
        async with lm.chat(chat_ctx=ctx) as s:
            async for _ in s:
                pass
        out["server_peak_rss_mb"] = _server_peak_mb(ep.server.pid)
    if component in ("stt", "stack"):
        t = time.perf_counter()
        stt = stack.stt()
        out["stt_load_s"] = time.perf_counter() - t
        frames = [a.frame async for a in stack.tts("espeak").synthesize(text)]
        await stt.recognize(frames)
    if component in ("tts", "espeak", "stack"):
        t = time.perf_counter()
        tts = stack.tts("espeak" if component == "espeak" else "piper")
        out["tts_load_s"] = time.perf_counter() - t
        [a async for a in tts.synthesize(text)]
    if component in ("vad", "stack"):
        t = time.perf_counter()
        stack.vad()
        out["vad_load_s"] = time.perf_counter() - t
    if component in ("embeddings", "stack"):
        t = time.perf_counter()
        stack.embedder().embed([text])
        out["embeddings_load_s"] = time.perf_counter() - t
    out["ready_s"] = time.perf_counter() - t0
    out["peak_rss_mb"] = _peak_mb()
    stack.close()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
