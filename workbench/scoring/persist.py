"""Scores next to the run: ``runs/<id>/scores.parquet`` (KEY columns + score columns) and ``scores.json``.

The turn rows are never rewritten: scoring only adds a file, joined on the schema's KEY columns,
so a run can be re-scored (with a judge, a fixed scorer, new facts) at any time. Re-scoring with
a scorer replaces that scorer's columns and keeps the others'; ``scores.json`` records for every
scorer what it added or why it added nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.core.config import load_config
from workbench.core.io import atomic_file, atomic_write_json
from workbench.core.run import SCORES_FILE, SCORES_META, RunFolder
from workbench.core.schema import KEY
from workbench.core.store import read_rows
from workbench.models import ModelStack
from workbench.scoring.base import available_scorers, score_run
from workbench.scoring.judge import JudgeLLM


def load_scored(run: str | Path, runs_dir: str | Path | None = None) -> RunFolder:
    """A run folder, whose ``rows`` are the turns with the stored scores overlaid (stored score columns replace
    same-named turn columns, e.g. a re-computed ``wer``), beside its ``manifest`` and ``scoring`` record."""
    return RunFolder.load(run, runs_dir)


def write_scores(path: Path, scored: pd.DataFrame, scoring: dict[str, Any]) -> Path:
    """Store the columns the scorers in ``scoring`` produced, replacing theirs and keeping other scorers'."""
    path = Path(path)
    old_meta = RunFolder(path).scoring
    outcomes = scoring.get("scorers", [])
    touched = {o["name"] for o in outcomes}
    old_cols_by_scorer = {s["name"]: s.get("columns", []) for s in old_meta.get("scorers", [])}
    drop = {c for name in touched for c in old_cols_by_scorer.get(name, [])}
    new_cols = [c for o in outcomes for c in o.get("columns", [])]

    frame = scored[list(KEY) + new_cols].copy()
    old_file = path / SCORES_FILE
    if old_file.exists():
        old = pd.read_parquet(old_file)
        keep = [c for c in old.columns if c not in KEY and c not in drop and c not in new_cols]
        if keep:
            frame = frame.merge(old[list(KEY) + keep], on=list(KEY), how="left")
    with atomic_file(old_file) as f:
        frame.to_parquet(f, index=False)

    merged = {s["name"]: s for s in old_meta.get("scorers", [])}
    merged.update({o["name"]: o for o in outcomes})
    meta = {
        "scored_at": datetime.now(UTC).isoformat(),
        "rows": len(frame),
        "scorers": list(merged.values()),
        # the judge that produced the judge columns now stored
        "judge": old_meta.get("judge") if touched.isdisjoint(_judge_scorers()) else scoring.get("judge"),
    }
    atomic_write_json(path / SCORES_META, meta)
    return old_file


def _judge_scorers() -> set[str]:

    return {n for n, cls in available_scorers().items() if cls.needs_judge}


def score_run_folder(
    run: str | Path,
    names: Iterable[str] | None = None,
    judge_endpoint: str | None = None,
    *,
    config_path: str | Path | None = None,
    runs_dir: str | Path | None = None,
    stack: Any = None,
) -> tuple[Path, dict[str, Any]]:
    """``workbench score``: score a stored run and write ``scores.parquet``/``scores.json`` beside it."""

    target = RunFolder.load(run, runs_dir)
    path = target.path
    df = read_rows(path)
    if df.empty:
        raise ValueError(f"run {path.name} has no turn rows to score")
    dataset = target.manifest.get("dataset")
    own = stack is None
    stack = stack or ModelStack(load_config(config_path))
    try:
        judge = JudgeLLM.from_endpoint(judge_endpoint, stack=stack) if judge_endpoint else None
        scored = score_run(df, names, judge, dataset=dataset, stack=stack)
    finally:
        if own:
            stack.close()
    scoring = scored.attrs["scoring"]
    write_scores(path, scored, scoring)
    return path, scoring
