"""Which embedded model calls tools, and through which llama.cpp chat format: the booking suite, swept.

Why a script and not a suite: the question is a grid (model x chat format), and `evals/booking.yaml` pins one
endpoint. For each cell this runs `evals/booking.yaml` through `workbench eval`'s own code (replay, offline
scorers, gates) with ``llm.gguf`` and ``llm.chat_format`` set as ``WORKBENCH__LLM__*`` variables would set them,
keeping only the strategies asked for (autogen and ag2 pass no tools: nothing to measure) with patient timeouts
(``PATIENT``, ``TURN_TIMEOUT_S``), and prints one table row per cell and strategy. One cell at a time: each
starts and stops its own llama.cpp server.

    python benchmarks/tool_calling.py                       # every model x format, plain only
    python benchmarks/tool_calling.py --models qwen2.5-coder-0.5b --formats hermes-tools --strategies plain,rag

Columns: ``tool_call_accuracy`` and ``tool_args_match`` (means over the turns with expectations), ``error_rate``
(share of turns with an error), ``calls`` (structured tool calls the session received and ran), ``JSON said``
(turns whose spoken answer holds a tool-call JSON: the model called the tool as text), median ``llm_ttfc_s``
(first chunk of the turn's last LLM request: after a tool call, the answer that reads its result), the cell's
wall time (server start and scoring included) and the 1-minute load average (the higher of start and end: on
shared cores, what else ran).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "evals" / "booking.yaml"
MODELS = ("smollm2", "qwen2.5-coder-0.5b")
# "template": the GGUF's own chat template (chat_format unset)
FORMATS = ("template", "chatml-function-calling", "hermes-tools")
# a busy machine is slow, not broken (as in tests/integration): the strategies' 15 s first-chunk timeout would turn a
# slow cold prompt into an error, and the single-slot server would then work through the abandoned request first
PATIENT = {"first_chunk_timeout_s": 90.0, "chunk_timeout_s": 60.0}
LOAD_FILE = "load.json"  # the cell's load average, beside its run
TURN_TIMEOUT_S = 300.0  # a tool turn is two requests (the call, then the answer that reads its result)
SPOKEN_CALL = re.compile(r'"name"\s*:\s*"\w+"\s*,\s*"(?:arguments|parameters)"|functions\.\w+:')


def spec(v: str | dict[str, Any]) -> dict[str, Any]:
    return {"kind": v} if isinstance(v, str) else dict(v)


def cell(model: str, fmt: str, strategies: list[str], runs_dir: Path) -> list[dict[str, Any]]:
    """Run the booking suite on one model and chat format; one summary row per strategy."""
    from workbench.core.config import ENV_PREFIX
    from workbench.workflows.eval import run_eval
    from workbench.workflows.suite import load_suite

    os.environ[f"{ENV_PREFIX}LLM__GGUF"] = model
    os.environ[f"{ENV_PREFIX}LLM__CHAT_FORMAT"] = "null" if fmt == "template" else fmt
    suite = load_suite(SUITE)
    gates = []
    for g in suite.gates:
        only = [s for s in g.get("strategies", strategies) if s in strategies]
        if only:
            gates.append({**g, "strategies": only} if "strategies" in g else g)
    agent = suite.agent.model_copy(update={"args": {**suite.agent.args, "db": str(runs_dir / "booking.sqlite")}})
    suite = suite.model_copy(
        update={
            "strategies": {k: {**spec(v), **PATIENT} for k, v in suite.strategies.items() if k in strategies},
            "gates": gates,
            "agent": agent,
            "turn_timeout_s": TURN_TIMEOUT_S,
        }
    )
    load0 = os.getloadavg()[0]
    label = Path(model).stem if "/" in model else model  # an alias, or a GGUF file's name
    verdict = run_eval(suite, run_id=f"{label}-{fmt}-{'+'.join(strategies)}", runs_dir=runs_dir)
    (verdict.run_path / LOAD_FILE).write_text(json.dumps({"load": max(load0, os.getloadavg()[0])}))
    return summarize(verdict.run_path, strategies)


def summarize(run_path: Path, strategies: list[str]) -> list[dict[str, Any]]:
    """One summary row per strategy of a finished cell (its folder: verdict.json, turn table, manifest)."""
    from datetime import datetime

    from workbench.replay.tools import load_calls
    from workbench.workflows.runs import Run

    run = Run.load(run_path)
    verdict = json.loads((run_path / "verdict.json").read_text())
    started = datetime.fromisoformat(run.manifest["created_at"])
    wall = (datetime.fromisoformat(verdict["created_at"]) - started).total_seconds()  # replay and scoring
    load_file = run_path / LOAD_FILE
    load = json.loads(load_file.read_text())["load"] if load_file.exists() else None
    llm = run.manifest.get("workbench_config", {}).get("llm", {})
    model = Path(str(llm.get("gguf", "?"))).stem if "/" in str(llm.get("gguf")) else llm.get("gguf", "?")
    rows = run.rows
    out = []
    for s in strategies:
        df = rows[rows["strategy"] == s]
        values = {r["metric"]: r["value"] for r in verdict["results"] if r["strategy"] == s and r["kind"] == "bound"}
        ttfc = [float(v) for v in df["llm_ttfc_s"] if v is not None and v == v]
        out.append(
            {
                "model": model,
                "format": llm.get("chat_format") or "template",
                "strategy": s,
                "turns": len(df),
                "tool_call_accuracy": values.get("tool_call_accuracy"),
                "tool_args_match": values.get("tool_args_match"),
                "error_rate": values.get("error_rate"),
                "calls": sum(len(load_calls(c) or []) for c in df["tool_calls"]),
                "json_said": int(sum(bool(SPOKEN_CALL.search(str(a or ""))) for a in df["answer"])),
                "median_ttfc_s": statistics.median(ttfc) if ttfc else None,
                "wall_s": wall,
                "load": load,  # 1-minute load average, the higher of start and end: other work on the cores
                "run": str(run_path),
            }
        )
    return out


def fmt_row(r: dict[str, Any]) -> str:
    def f(v: Any, spec: str = ".2f") -> str:
        return "-" if v is None else format(v, spec)

    return (
        f"| {r['model']} | {r['format']} | {r['strategy']} | {r['turns']} | {f(r['tool_call_accuracy'])} | "
        f"{f(r['tool_args_match'])} | {f(r['error_rate'])} | {r['calls']} | {r['json_said']} | "
        f"{f(r['median_ttfc_s'])} | {f(r['wall_s'], '.0f')} | {f(r['load'], '.1f')} |"
    )


HEADER = (
    "| model | chat format | strategy | turns | tool_call_accuracy | tool_args_match | error_rate | calls | "
    "JSON said | median llm_ttfc_s | wall s | load |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="GGUF aliases or paths, comma-separated")
    p.add_argument("--formats", default=",".join(FORMATS))
    p.add_argument("--strategies", default="plain")
    p.add_argument("--runs-dir", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    p.add_argument("--summarize", type=Path, nargs="*", help="print the rows of these finished cells (run folders)")
    a = p.parse_args(argv)
    if a.summarize:
        print(HEADER)
        for path in a.summarize:
            for r in summarize(path, a.strategies.split(",")):
                print(fmt_row(r))
        return 0
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
    runs_dir = a.runs_dir or Path(tempfile.mkdtemp(prefix="tool-calling-"))
    runs_dir.mkdir(parents=True, exist_ok=True)
    strategies = a.strategies.split(",")
    rows: list[dict[str, Any]] = []
    print(HEADER, flush=True)
    for model in a.models.split(","):
        for fmt in a.formats.split(","):
            for r in cell(model, fmt, strategies, runs_dir):
                rows.append(r)
                print(fmt_row(r), flush=True)
                if a.json:
                    a.json.write_text(json.dumps(rows, indent=1))
    print(f"runs: {runs_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
