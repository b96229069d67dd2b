"""The Run object, ``list_runs``, the atomic writer, and the notebook path: ``workbench.run`` inside a running loop."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import workbench
from workbench.core.config import EndpointConfig, WorkbenchConfig
from workbench.core.io import atomic_write_bytes, atomic_write_json, atomic_write_text, jsonable
from workbench.core.metrics import METRICS, Metric
from workbench.core.run import MANIFEST_FILE, SCORES_FILE, resolve_runs_dir
from workbench.core.schema import KEY
from workbench.core.store import RunStore
from workbench.faults.endpoint import Script, ScriptedEndpoint
from workbench.models import ModelStack
from workbench.scoring import SCORERS, Scorer, scorer
from workbench.testing.worlds import make_dataset
from workbench.workflows import Suite
from workbench.workflows.runs import Run, list_runs

HEDGES = "_test_hedges"


def write_run(runs: Path, run_id: str, created_at: str | None = None, status: str = "complete") -> Path:
    """A finished run folder as the runner leaves it: a manifest and two plain turns."""
    store = RunStore(runs / run_id)
    manifest = {"run_id": run_id, "status": status, "suite": {"baseline": "plain"}}
    store.write_manifest(manifest | ({"created_at": created_at} if created_at else {}))
    for turn in range(2):
        key = {"strategy": "plain", "mode": "text", "voice": "", "conversation_id": "c0", "repetition": 0}
        store.append(key | {"run_id": run_id, "turn_index": turn, "answer": f"answer {turn}", "wer": 0.5})
    store.compact()
    store.close()
    return runs / run_id


# -- reading a run ---------------------------------------------------------------------------------------------
def test_a_run_loads_by_id_and_by_path_with_its_manifest_read_once(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    path = write_run(runs, "r1", created_at="2026-12-01T10:00:00+00:00")
    by_id, by_path = Run.load("r1", runs), Run.load(path)
    assert by_id.path == by_path.path == path.absolute() and by_id.run_id == "r1"
    assert by_id.manifest["status"] == "complete" and by_id.status == "complete"
    (path / MANIFEST_FILE).write_text("{}")
    assert by_id.manifest["run_id"] == "r1"  # read once: the object keeps what it read
    assert by_id.rows["answer"].tolist() == ["answer 0", "answer 1"]
    with pytest.raises(FileNotFoundError, match="no run 'nope'"):
        Run.load("nope", runs)


def test_rows_overlay_the_stored_scores_and_load_run_is_run_rows(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    path = write_run(runs, "r1")
    run = Run.load(path)
    assert run.rows["wer"].tolist() == [0.5, 0.5] and run.scoring == {}
    scores = run.rows[list(KEY)].assign(wer=[0.0, 0.25], fact_recall=[1.0, 0.5])
    scores.to_parquet(path / SCORES_FILE, index=False)
    fresh = Run.load(path)
    assert fresh.rows["wer"].tolist() == [0.0, 0.25]  # a stored score replaces the harness's column
    assert fresh.rows["fact_recall"].tolist() == [1.0, 0.5]
    pd.testing.assert_frame_equal(workbench.load_run("r1", runs), fresh.rows)


def test_the_runs_folder_is_resolved_once_from_the_argument_the_environment_or_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WORKBENCH_RUNS_DIR", raising=False)
    monkeypatch.delenv("WORKBENCH_CONFIG", raising=False)
    monkeypatch.delenv("WORKBENCH__RUNS_DIR", raising=False)
    assert resolve_runs_dir() == tmp_path / "runs"
    assert resolve_runs_dir("elsewhere") == tmp_path / "elsewhere"
    monkeypatch.setenv("WORKBENCH__RUNS_DIR", "from-config")
    assert resolve_runs_dir() == tmp_path / "from-config"
    monkeypatch.setenv("WORKBENCH_RUNS_DIR", str(tmp_path / "from-env"))
    assert resolve_runs_dir() == tmp_path / "from-env"
    assert WorkbenchConfig().state_dir == tmp_path / ".workbench"  # absolute, so a later chdir does not move it


def test_list_runs_is_newest_first_and_filters_on_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    write_run(runs, "old", created_at="2026-11-01T10:00:00+00:00")
    write_run(runs, "new", created_at="2026-12-01T10:00:00+00:00")
    write_run(runs, "broken", created_at="2026-12-02T10:00:00+00:00", status="interrupted")
    (runs / "not-a-run").mkdir()
    (runs / "torn").mkdir()
    (runs / "torn" / MANIFEST_FILE).write_text("{")
    assert [r.run_id for r in list_runs(runs)] == ["broken", "new", "old"]
    assert [r.run_id for r in list_runs(runs, filter=lambda r: r.status == "complete")] == ["new", "old"]
    monkeypatch.setenv("WORKBENCH_RUNS_DIR", str(runs))
    assert [r.run_id for r in workbench.list_runs()] == ["broken", "new", "old"]
    assert list_runs(tmp_path / "none") == []


# -- the atomic writer -----------------------------------------------------------------------------------------
def test_the_atomic_writer_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "data.json"
    atomic_write_text(target, "old")
    atomic_write_json(target, {"a": float("nan"), "b": np.float32(0.5), "c": np.arange(2), "d": Path("x/y")})
    assert json.loads(target.read_text()) == {"a": None, "b": 0.5, "c": [0, 1], "d": "x/y"}
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["data.json"]


def test_a_failed_write_keeps_the_old_content_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "manifest.json"
    atomic_write_json(target, {"status": "complete"})

    def crash(src: Any, dst: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_json(target, {"status": "running"})
    assert json.loads(target.read_text()) == {"status": "complete"}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_jsonable_merges_the_numpy_nan_and_path_rules() -> None:
    value = {1: (np.int64(3), [float("nan"), np.bool_(True)]), "p": Path("/a"), "s": "text", "n": None}
    assert jsonable(value) == {"1": [3, [None, True]], "p": "/a", "s": "text", "n": None}


# -- a notebook: the sync API inside a running event loop -----------------------------------------------------
@pytest.fixture
def hedges() -> Iterator[type[Scorer]]:
    """A user's scorer declared in a notebook cell: hedging words per answer, fewer is better."""

    @scorer(HEDGES)
    class Hedges(Scorer):
        metrics = (Metric("hedges", "hedging words", "words", "lower", "um and uh per answer"),)

        def score(self, df: pd.DataFrame, ctx: Any) -> pd.DataFrame:
            words = df["answer"].fillna("").str.lower().str.replace(",", "").str.split()
            return pd.DataFrame({"hedges": [sum(w in ("um", "uh") for w in ws) for ws in words]}, index=df.index)

    try:
        yield Hedges
    finally:
        SCORERS.pop(HEDGES, None)
        METRICS.discard("hedges")


async def test_the_sync_api_works_inside_a_running_loop_as_in_a_notebook(tmp_path: Path, hedges: type[Scorer]) -> None:
    ds = make_dataset(tmp_path / "ds", conversations=4, turns=2)
    runs = tmp_path / "runs"
    # endpoints on their own threads, like real servers: the caller's loop is blocked while the run runs
    with ScriptedEndpoint() as plain, ScriptedEndpoint(Script(text="Um, uh, we open at 8 am.")) as hesitant:
        config = WorkbenchConfig(
            llm=EndpointConfig(kind="openai", base_url=plain.base_url, model="scripted-model"),
            endpoints={"hesitant": EndpointConfig(kind="openai", base_url=hesitant.base_url, model="scripted-model")},
            state_dir=tmp_path / "state",
        )
        suite = Suite(dataset=ds, strategies={"plain": "plain", "hesitant": {"kind": "plain", "endpoint": "hesitant"}})
        with ModelStack(config) as stack:
            result = workbench.run(suite, runs_dir=runs, stack=stack, progress=False)  # no `await`: the sync API
            again = workbench.run(suite, runs_dir=runs, stack=stack, progress=False, reuse=True)
    assert again.path == result.path  # the complete run of the same suite, not a second replay

    run = Run.load(result.run_id, runs)
    assert run.status == "complete" and len(run.rows) == 16
    assert [r.run_id for r in workbench.list_runs(runs, filter=lambda r: r.status == "complete")] == [run.run_id]

    run.score([HEDGES])
    assert run.rows.groupby("strategy")["hedges"].mean().to_dict() == {"hesitant": 2.0, "plain": 0.0}
    cmp = run.compare(n_boot=50)  # the baseline is the suite's: plain
    paired = cmp.paired.set_index(["strategy", "metric"]).loc[("hesitant", "hedges")]
    assert paired["direction"] == "lower" and paired["mean_diff"] == 2.0
    assert paired["verdict"] == "worse"  # more hedging on a lower-is-better metric
    assert run.report().exists()
