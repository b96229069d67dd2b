"""Two installed stacks side by side: this checkout's (``.venv``) against another's (``OLD_PYTHON``), each
figure of ``stack_figures.py`` run in alternating processes, medians and new/old ratios per figure.

    make bench-stacks OLD=<commit>      # builds the other commit's venv once, then runs this file
    OLD_PYTHON=/path/to/other/.venv/bin/python .venv/bin/pytest benchmarks/test_bench_stacks.py --benchmark-only -s

The other interpreter runs its own checkout's workbench (an editable install) with this file's script.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("stack_figures.py")
OLD_PYTHON = os.environ.get("OLD_PYTHON")
# (figure, alternating rounds per stack): the real-time and embedded-model figures are slow
FIGURES = [
    ("overhead", 3),
    ("throughput", 3),
    ("throughput_aiohttp", 3),
    ("first_turn", 3),
    ("cold_start", 3),
    ("v2v", 3),
]

pytestmark = pytest.mark.skipif(not OLD_PYTHON, reason="set OLD_PYTHON to the other stack's interpreter")


def _versions(python: str) -> str:
    code = "import importlib.metadata as m; print(m.version('livekit-agents'), m.version('openai'))"
    lk, oa = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return f"livekit-agents {lk}, openai {oa}"


def _figure(python: str, name: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "WORKBENCH_"))}
    out = subprocess.run([python, str(SCRIPT), name], capture_output=True, text=True, env=env, timeout=900)
    if out.returncode:
        raise RuntimeError(f"{python} {name}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("name", "rounds"), FIGURES, ids=[f for f, _ in FIGURES])
def test_stack_against_stack(benchmark, name: str, rounds: int) -> None:
    stacks = {"old": str(OLD_PYTHON), "new": sys.executable}
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}

    def alternate() -> None:
        for r in range(rounds):  # old, new, new, old, ...: neither always runs on the warmer machine
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            for which in order:
                runs[which].append(_figure(stacks[which], name))

    benchmark.pedantic(alternate, rounds=1, iterations=1)
    keys = [k for k in runs["new"][0] if k != "turns"]
    med = {w: {k: statistics.median(r[k] for r in runs[w]) for k in keys} for w in runs}
    ratio = {k: med["new"][k] / med["old"][k] for k in keys if med["old"][k]}
    benchmark.extra_info.update(old=med["old"], new=med["new"], ratio_new_over_old=ratio, runs=runs)
    benchmark.extra_info.update(old_versions=_versions(stacks["old"]), new_versions=_versions(stacks["new"]))
    print(f"\n{name}: old ({benchmark.extra_info['old_versions']}) vs new ({benchmark.extra_info['new_versions']})")
    for k in keys:
        each = {w: [round(r[k], 2) for r in runs[w]] for w in runs}
        line = f"  {k}: old {med['old'][k]:.2f} {each['old']}, new {med['new'][k]:.2f} {each['new']}"
        print(f"{line}, new/old {ratio.get(k, float('nan')):.3f}")
