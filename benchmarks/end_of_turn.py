"""End of turn against cut-offs, on the embedded stack (Silero VAD, Whisper tiny.en, Piper): which setting answers
fastest without cutting callers off at a pause.

Why a script and not a suite: the question is a grid of turn settings, and a suite pins one config. For each
setting this replays the pause set (``datasets/dianachat_pauses``: 14 one-turn calls whose caller pauses 0.25-0.6 s
mid-utterance, some trailing off) in real time through the ``extractive`` strategy (no LLM: the voice path alone)
and prints one table row; ``--demo`` settings also replay single-turn calls of the demo dataset (no pauses) with
the default extractive answer and print every stage of voice-to-voice side by side. One setting at a time, each
on a fresh model stack whose speech models are warmed up first (one transcription, one synthesis).

    .venv/bin/python benchmarks/end_of_turn.py                          # SETTINGS on the pause set, DEMO on the demo
    .venv/bin/python benchmarks/end_of_turn.py --settings vad-0.55-0.5,vad-0.3-0.3 --demo vad-0.55-0.5,vad-0.3-0.3
    .venv/bin/python benchmarks/end_of_turn.py --summarize RUN_DIR ...  # the tables of finished runs

A setting is ``MODE-SILENCE-MIN[-MAX][-pre|-pretts]``. MODE: ``vad`` (end of turn on VAD silence), ``td``
(LiveKit's local audio TurnDetector) or ``st`` (Smart Turn v3 from the ``pipecat-ai`` wheel, see
``workbench.models.smart_turn``; ``pip install --no-deps pipecat-ai==1.14.0``). Then the VAD's
``min_silence_duration``, the turn's ``min_endpointing_delay`` and ``max_endpointing_delay`` (default 3.0), and
LiveKit's preemptive generation (``pre``: the reply's LLM starts on the final transcript, before the end-of-turn
decision; ``pretts``: its TTS too); ``nogate`` turns off the transcript gate (``turn.wait_for_transcript``: in VAD
mode over a batch STT, the turn does not end while a segment of the caller's speech is still being transcribed);
``early`` transcribes a segment 0.05 s into the caller's silence instead of when the VAD ends it
(``turn.early_transcript_s``, ``workbench.models.speech.EarlyTranscripts``).
``vad-0.55-0.5-nogate`` is the default this study started from.

Columns of the pause table, per setting (medians over its turns): ``eou_delay_s`` (end of the caller's speech to
the end-of-turn decision; of the last decision on a cut turn), ``v2v_s`` (end of speech to the first agent audio,
over the turns not cut off: a cut turn's reply starts before the end of speech), ``cut-offs`` (turns where an
end-of-turn decision or the agent's audio came before the caller's end of speech: column ``cut_off``), ``split``
(turns LiveKit committed as two user messages or more: ``user_turns`` > 1), ``stt_s`` (end of speech to the final
transcript: with a batch STT, the floor under ``eou_delay_s``), ``whisper_s`` (``stt_s`` minus the VAD's silence:
Whisper's own time, the part of the floor a shorter silence cannot remove), the run's wall time and the 1-minute
load average (the higher of start and end: other work on the two shared cores). docs/latency.md explains each
latency column.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAUSES = ROOT / "datasets" / "dianachat_pauses"
DEMO_DATASET = ROOT / "datasets" / "dianachat_demo"
DEMO_IDS = ["c001", "c002", "c003", "c004", "c005", "c006"]  # single-turn calls of the demo dataset
SETTINGS = (
    "vad-0.55-0.5-nogate",  # the default this study started from
    "vad-0.3-0.3",
    "vad-0.25-0.25",
    "vad-0.2-0.2",
    "vad-0.25-0.25-nogate",
    "vad-0.25-0.25-pretts",
    "td-0.3-0.3",
    "st-0.3-0.3-1.0",
)
DEMO = ("vad-0.55-0.5-nogate", "vad-0.25-0.25")  # before and after: the old default, the new one
SMART_TURN = "workbench.models.smart_turn:SmartTurn"
PAUSE_WORDS = 12  # the extractive answer's length on the pause set: its latency needs only the first sentence
STAGES = (
    "stt_s",
    "eou_delay_s",
    "llm_start_s",
    "llm_ttfs_s",
    "tts_ttfb_s",
    "playout_s",
    "unattributed_s",
    "v2v_s",
    "heard_v2v_s",
)
LOAD_FILE = "load.json"


FLAGS = ("pre", "pretts", "nogate", "early")


def parse_setting(name: str) -> dict[str, Any]:
    """``vad-0.3-0.3``, ``td-0.3-0.3-1.5``, ``vad-0.2-0.5-pretts-nogate`` -> the config values they stand for."""
    parts = name.split("-")
    flags = {f for f in parts[1:] if f in FLAGS}
    nums = [f for f in parts[1:] if f not in FLAGS]
    pre = "pretts" if "pretts" in flags else "pre" if "pre" in flags else None
    if parts[0] not in ("vad", "td", "st") or len(nums) not in (2, 3):
        raise ValueError(
            f"{name!r}: a setting is MODE-SILENCE-MIN[-MAX][-pre|-pretts][-nogate][-early], e.g. vad-0.3-0.3"
        )
    return {
        "mode": "turn_detector" if parts[0] == "td" else "vad",
        "detector": {"use": SMART_TURN} if parts[0] == "st" else None,
        "min_silence_duration": float(nums[0]),
        "min_endpointing_delay": float(nums[1]),
        "max_endpointing_delay": float(nums[2]) if len(nums) == 3 else 3.0,
        "preemptive_generation": pre is not None,
        "preemptive_tts": pre == "pretts",
        "wait_for_transcript": "nogate" not in flags,
        "early_transcript_s": 0.05 if "early" in flags else None,
    }


def config_for(name: str) -> Any:
    """The workbench config (defaults + environment) with this setting's VAD and turn sections."""
    from workbench.core.config import Factory, VADConfig, load_config

    s = parse_setting(name)
    base = load_config()
    vad = VADConfig(min_silence_duration=s.pop("min_silence_duration"))
    s["detector"] = Factory(**s["detector"]) if s["detector"] else None
    turn = base.turn.model_copy(update=s)
    return base.model_copy(update={"vad": vad, "turn": turn})


def warm(stack: Any) -> None:
    """One transcription and one synthesis, so the first measured turn is not a cold start of either model."""
    from workbench.replay.audio import load_audio

    samples = load_audio(DEMO_DATASET / "audio" / "c001_0_piper.wav", target_rate=16000).samples
    stack.stt().transcribe(samples)
    stack.tts("piper").synthesize_bytes("Hello, how can I help?")
    stack.vad()


async def replay(name: str, dataset: Path, ids: list[str] | None, strategy: dict[str, Any], runs_dir: Path) -> Path:
    from workbench.models import ModelStack
    from workbench.workflows import Suite, arun
    from workbench.workflows.suite import Selection, VoiceOptions

    suite = Suite(
        name=f"eot-{name}",
        dataset=dataset,
        mode="voice",
        strategies={"extractive": strategy},
        conversations=Selection(ids=ids),
        voice=VoiceOptions(variants=["piper"], turn_timeout_s=60.0),
    )
    load0 = os.getloadavg()[0]
    with ModelStack(config_for(name)) as stack:
        warm(stack)
        res = await arun(suite, runs_dir=runs_dir, stack=stack, run_id=f"{dataset.name}-{name}", progress=False)
    (res.path / LOAD_FILE).write_text(json.dumps({"load": max(load0, os.getloadavg()[0])}))
    return res.path


def _median(values: Any) -> float | None:
    xs = [float(v) for v in values if v is not None and v == v]
    return statistics.median(xs) if xs else None


def summarize(run_path: Path) -> dict[str, Any]:
    """One row of the pause table (also used for the demo's turns) from a finished run."""
    from datetime import datetime

    from workbench.workflows import load_run
    from workbench.workflows.runs import Run

    run = Run.load(run_path)
    df = load_run(run_path)
    cfg = run.manifest.get("workbench_config", {})
    silence = float(cfg.get("vad", {}).get("min_silence_duration", float("nan")))
    cut = df["cut_off"].fillna(False).astype(bool) if "cut_off" in df else df["v2v_s"] < 0
    split = (df["user_turns"].fillna(1) > 1) if "user_turns" in df else cut & False
    kept = df[~cut]
    load_file = run_path / LOAD_FILE
    updated = run.manifest.get("finished_at")
    wall = (
        (datetime.fromisoformat(updated) - datetime.fromisoformat(run.manifest["created_at"])).total_seconds()
        if updated
        else None
    )
    return {
        "setting": str(run.manifest.get("name", run_path.name)).removeprefix("eot-"),
        "turns": len(df),
        "errors": int(df["error_kind"].notna().sum()),
        "cut_offs": int(cut.sum()),
        "split": int(split.sum()),
        "eou_delay_s": _median(df["eou_delay_s"]),
        "v2v_s": _median(kept["v2v_s"]),
        "stt_s": _median(df["stt_s"]),
        "whisper_s": _median(df["stt_s"] - silence),
        "stages": {c: _median(kept[c]) for c in STAGES if c in kept},
        "cut_ids": sorted(df.loc[cut, "conversation_id"].tolist()),
        "wall_s": wall,
        "load": json.loads(load_file.read_text())["load"] if load_file.exists() else None,
        "run": str(run_path),
    }


def _f(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


PAUSE_HEADER = (
    "| setting | turns | eou_delay_s p50 | v2v_s p50 (not cut) | cut-offs | split | stt_s p50 | whisper_s p50 | "
    "errors | cut calls | wall s | load |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def pause_row(r: dict[str, Any]) -> str:
    return (
        f"| {r['setting']} | {r['turns']} | {_f(r['eou_delay_s'])} | {_f(r['v2v_s'])} | {r['cut_offs']}/{r['turns']} | "
        f"{r['split']} | {_f(r['stt_s'])} | {_f(r['whisper_s'])} | {r['errors']} | {', '.join(r['cut_ids']) or '-'} | "
        f"{_f(r['wall_s'], '.0f')} | {_f(r['load'], '.1f')} |"
    )


def stage_table(rows: list[dict[str, Any]]) -> str:
    """Medians of every voice-to-voice stage, one column per setting (the demo's single-turn calls)."""
    head = "| stage (p50, s) | " + " | ".join(r["setting"] for r in rows) + " |"
    lines = [head, "|---|" + "---|" * len(rows)]
    for c in STAGES:
        lines.append(f"| {c} | " + " | ".join(_f(r["stages"].get(c)) for r in rows) + " |")
    lines.append("| cut-offs | " + " | ".join(f"{r['cut_offs']}/{r['turns']}" for r in rows) + " |")
    lines.append("| load | " + " | ".join(_f(r["load"], ".1f") for r in rows) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", default=",".join(SETTINGS), help="settings for the pause set ('' for none)")
    p.add_argument("--demo", default=",".join(DEMO), help="settings for the demo's single-turn calls ('' for none)")
    p.add_argument("--runs-dir", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    p.add_argument("--json", type=Path, default=None, help="also write the summaries to this JSON file")
    p.add_argument("--summarize", type=Path, nargs="*", help="print the tables of these finished runs")
    a = p.parse_args(argv)
    if a.summarize:
        rows = [summarize(path) for path in a.summarize]
        print(PAUSE_HEADER)
        for r in rows:
            print(pause_row(r))
        print()
        print(stage_table(rows))
        return 0
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
    runs_dir = a.runs_dir or Path(tempfile.mkdtemp(prefix="end-of-turn-"))
    runs_dir.mkdir(parents=True, exist_ok=True)
    settings = [s for s in a.settings.split(",") if s]
    demo = [s for s in a.demo.split(",") if s]
    for s in {*settings, *demo}:
        parse_setting(s)  # a typo fails before anything runs
    out: dict[str, list[dict[str, Any]]] = {"pauses": [], "demo": []}
    started = time.time()
    print(PAUSE_HEADER, flush=True)
    for s in settings:
        path = asyncio.run(replay(s, PAUSES, None, {"kind": "extractive", "max_words": PAUSE_WORDS}, runs_dir))
        out["pauses"].append(summarize(path))
        print(pause_row(out["pauses"][-1]), flush=True)
        if a.json:
            a.json.write_text(json.dumps(out, indent=1))
    for s in demo:
        path = asyncio.run(replay(s, DEMO_DATASET, DEMO_IDS, {"kind": "extractive"}, runs_dir))
        out["demo"].append(summarize(path))
        if a.json:
            a.json.write_text(json.dumps(out, indent=1))
    if out["demo"]:
        print(f"\nDemo single-turn calls ({', '.join(DEMO_IDS)}), extractive, stages over turns not cut off:\n")
        print(stage_table(out["demo"]))
    print(f"runs: {runs_dir} ({time.time() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
