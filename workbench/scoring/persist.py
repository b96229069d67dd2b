"""Scores next to the run: ``runs/<id>/scores.parquet`` (KEY columns + score columns) and ``scores.json``.

The turn rows are never rewritten: scoring only adds a file, joined on the schema's KEY columns,
so a run can be re-scored (with a judge, a fixed scorer, new facts) at any time. Re-scoring with
a scorer replaces that scorer's columns and keeps the others'; ``scores.json`` records for every
scorer what it added or why it added nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.replay.schema import KEY
from workbench.replay.store import MANIFEST_FILE, RUNS_DIR, read_rows, resolve_run

SCORES_FILE = "scores.parquet"
SCORES_META = "scores.json"


@dataclass
class ScoredRun:
    """A run's rows with its stored scores overlaid, plus the manifest and the scoring record."""

    path: Path
    df: pd.DataFrame
    manifest: dict[str, Any] = field(default_factory=dict)
    scoring: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.path.name)

    @property
    def dataset(self) -> Path | None:
        d = self.manifest.get("dataset")
        return Path(d) if d else None


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def read_scoring(path: Path) -> dict[str, Any]:
    meta = path / SCORES_META
    if not meta.exists():
        return {}
    return json.loads(meta.read_text(encoding="utf-8"))


def load_scored(run: str | Path, runs_dir: Path = RUNS_DIR) -> ScoredRun:
    """Rows + scores (stored score columns replace same-named turn columns, e.g. a re-computed ``wer``)."""
    path = resolve_run(run, runs_dir)
    df = read_rows(path)
    scores = path / SCORES_FILE
    if scores.exists() and not df.empty:
        extra = pd.read_parquet(scores)
        cols = [c for c in extra.columns if c not in KEY]
        df = df.drop(columns=[c for c in cols if c in df.columns]).merge(extra, on=list(KEY), how="left")
    manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    return ScoredRun(path, df, manifest, read_scoring(path))


def write_scores(path: Path, scored: pd.DataFrame, scoring: dict[str, Any]) -> Path:
    """Store the columns the scorers in ``scoring`` produced, replacing theirs and keeping other scorers'."""
    path = Path(path)
    old_meta = read_scoring(path)
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
    _atomic_write(old_file, lambda tmp: frame.to_parquet(tmp, index=False))

    merged = {s["name"]: s for s in old_meta.get("scorers", [])}
    merged.update({o["name"]: o for o in outcomes})
    meta = {
        "scored_at": datetime.now(UTC).isoformat(),
        "rows": len(frame),
        "scorers": list(merged.values()),
        # the judge that produced the judge columns now stored
        "judge": old_meta.get("judge") if touched.isdisjoint(_judge_scorers()) else scoring.get("judge"),
    }
    _atomic_write(path / SCORES_META, lambda tmp: tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8"))
    return old_file


def _judge_scorers() -> set[str]:
    from workbench.scoring.base import available_scorers

    return {n for n, cls in available_scorers().items() if cls.needs_judge}


def score_run_folder(
    run: str | Path,
    names: Iterable[str] | None = None,
    judge_endpoint: str | None = None,
    *,
    config_path: str | Path | None = None,
    runs_dir: Path = RUNS_DIR,
    stack: Any = None,
) -> tuple[Path, dict[str, Any]]:
    """``workbench score``: score a stored run and write ``scores.parquet``/``scores.json`` beside it."""
    from workbench.config import load_config
    from workbench.models import ModelStack
    from workbench.scoring.base import score_run
    from workbench.scoring.judge import JudgeLLM

    path = resolve_run(run, runs_dir)
    df = read_rows(path)
    if df.empty:
        raise ValueError(f"run {path.name} has no turn rows to score")
    manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    dataset = manifest.get("dataset")
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
