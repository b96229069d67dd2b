"""The Ray executor on a real local cluster (a head and a second node on 127.0.0.1, started here): its rows equal
the in-process executor's, a slot killed mid-run loses and doubles no turn, and a lost run resumes on Ray.

The slots' stacks talk HTTP to a scripted endpoint (echo answers) that runs on its own thread in this process.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from workbench.core.run import JOURNAL_FILE, MANIFEST_FILE, TURNS_FILE
from workbench.core.schema import KEY
from workbench.core.store import read_rows
from workbench.faults.endpoint import Script, ScriptedEndpoint
from workbench.testing.worlds import make_dataset
from workbench.workflows import Suite, arun
from workbench.workflows.executors import RayExecutor

ray = pytest.importorskip("ray")

# what a turn's content is, apart from timing and where it ran
SAME = [*KEY, "user_text", "reference", "answer", "error_kind", "fallback", "history_dropped", "tool_names"]


def _start_cluster() -> object:
    """A head and a second node, one CPU each, on this machine (Ray's own ``Cluster``)."""
    from ray.cluster_utils import Cluster

    cluster = None
    try:
        cluster = Cluster(
            initialize_head=True, connect=False, head_node_args={"num_cpus": 1, "include_dashboard": False}
        )
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes(timeout=60)
        return cluster
    except Exception as e:  # a raylet gives its agents 15 s to start: a loaded machine can miss that
        if cluster is not None:
            cluster.shutdown()
        pytest.skip(f"Ray could not start a local cluster on this machine: {e}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    c = _start_cluster()
    ray.init(address=c.address, include_dashboard=False, logging_level="WARNING")
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _suite(tmp_path: Path, ep: ScriptedEndpoint, turns: int = 2) -> Suite:
    ds = make_dataset(tmp_path / "ds", conversations=3, turns=turns)
    config = tmp_path / "workbench.yaml"
    llm = {"kind": "openai", "base_url": ep.base_url, "model": ep.model}
    config.write_text(json.dumps({"llm": llm, "state_dir": str(tmp_path / "state")}))
    return Suite(
        dataset=ds,
        strategies={"plain": "plain", "second": "plain"},
        config=config,
        concurrency=1,
        executor={"kind": "ray", "slots": 2, "cpus_per_slot": 1},
    )


def _content(df: pd.DataFrame) -> pd.DataFrame:
    return df[SAME].sort_values(list(KEY)).reset_index(drop=True).astype(str)


@pytest.mark.timeout(240)
async def test_ray_rows_equal_in_process_rows_with_a_slot_killed_and_a_lost_run_resumes(
    cluster, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    total = 2 * 3 * 3  # strategies x conversations x turns
    executor = RayExecutor(address=cluster.address, slots=2, cpus_per_slot=1)
    with ScriptedEndpoint(Script(ttft_s=0.2)) as ep:  # echo: each answer names its question
        suite = _suite(tmp_path, ep, turns=3)
        local = await arun(suite, runs_dir=runs, executor="inprocess", progress=False)

        # on Ray, with slot 0 killed once turns are coming back: it is replaced and its job continues
        run = asyncio.create_task(arun(suite, runs_dir=runs, run_id="on-ray", executor=executor, progress=False))
        journal = runs / "on-ray" / JOURNAL_FILE
        deadline = time.monotonic() + 90
        while not (journal.exists() and journal.read_text().count("\n") >= 2):
            assert time.monotonic() < deadline and not run.done(), "no turns came back"
            await asyncio.sleep(0.05)
        ray.kill(executor.handles[0])
        on_ray = await run
        assert executor.restarts == 1
        local_df, ray_df = read_rows(local.path), read_rows(on_ray.path)
        assert len(local_df) == len(ray_df) == total and on_ray.rows == total  # every turn once: none redone or lost
        pd.testing.assert_frame_equal(_content(local_df), _content(ray_df))
        assert local_df["executor_node"].isna().all() and local_df["executor_slot"].isna().all()
        nodes = {n["NodeID"] for n in ray.nodes()}
        assert set(ray_df["executor_node"]) <= nodes and set(ray_df["executor_slot"]) <= {0, 1}
        assert ray_df["slot_load"].between(0, 100).all()

        # the driver lost a run after some turns: the folder holds part of them and says "interrupted"
        lost = runs / "lost"
        lost.mkdir()
        manifest = json.loads((on_ray.path / MANIFEST_FILE).read_text())
        (lost / MANIFEST_FILE).write_text(json.dumps(manifest | {"run_id": "lost", "status": "interrupted"}))
        gone = (ray_df["conversation_id"] == "c2") | ((ray_df["conversation_id"] == "c1") & (ray_df["turn_index"] == 2))
        (lost / JOURNAL_FILE).write_text(ray_df[~gone].to_json(orient="records", lines=True))
        resumed = await arun(suite, resume=lost, runs_dir=runs, executor={"slots": 1}, progress=False)
    assert resumed.skipped == int((~gone).sum()) and resumed.rows == int(gone.sum())
    assert json.loads((lost / MANIFEST_FILE).read_text())["status"] == "complete" and (lost / TURNS_FILE).exists()
    again = read_rows(lost)
    pd.testing.assert_frame_equal(_content(again), _content(local_df))
    assert again.loc[again["conversation_id"] == "c2", "executor_node"].notna().all()
