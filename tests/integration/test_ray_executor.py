"""The Ray executor on a real local cluster (a head and a second node on 127.0.0.1, one CPU each, started once
for the file): its rows equal the in-process executor's, text and voice (light speech components the slots build
from the suite's config); a lost run resumes on Ray while a slot that fails its checks on its node gets no jobs;
and a run survives its second node dying (the slot there cannot be replaced: no CPU is left) and a killed slot,
with no turn lost or written twice.

The phases share one dataset, one endpoint and the in-process rows they are all compared with. The slots' stacks
talk HTTP to a scripted endpoint (echo answers) that runs on its own thread in this process; it can hold the
dataset's questions unanswered, so the faults land while jobs are in flight, at a known point of the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import soundfile as sf
from aiohttp import web

from workbench.core.run import JOURNAL_FILE, MANIFEST_FILE, TURNS_FILE
from workbench.core.schema import KEY
from workbench.core.store import read_rows
from workbench.faults.endpoint import Script, ScriptedEndpoint, last_user_text
from workbench.strategies.registry import available
from workbench.testing.worlds import make_dataset, voice_dataset
from workbench.workflows import Suite, arun
from workbench.workflows.executors import RayExecutor

ray = pytest.importorskip("ray")

# what a turn's content is, apart from timing and where it ran
SAME = [
    *KEY,
    "user_text",
    "transcript",
    "reference",
    "answer",
    "error_kind",
    "fallback",
    "history_dropped",
    "tool_names",
]
# set for the driver and the head node; empty on the second node, so a slot there fails its checks when the
# config names it (a key variable a node lacks: what the slots' checks are for)
KEY_VAR = "WB_RAY_TEST_KEY"
LIGHT_COMPONENTS = {  # the voice world's components (workbench.testing.worlds), built by each slot from config
    "stt": {"use": "workbench.faults.speech:ToneSTT", "delay_s": 0.1, "tones": {220: "question"}},
    "tts": {"use": "workbench.faults.speech:FixedDelayTTS", "ttfb_s": 0.08},
    "vad": {"use": "workbench.faults.speech:EnergyVAD", "silence_s": 0.3},
    "turn": {"mode": "vad", "min_endpointing_delay": 0.2, "max_endpointing_delay": 1.0},
}


def _start_cluster() -> Any:
    """A head and a second node, one CPU each, on this machine (Ray's own ``Cluster``)."""
    from ray.cluster_utils import Cluster

    cluster = None
    try:
        cluster = Cluster(
            initialize_head=True, connect=False, head_node_args={"num_cpus": 1, "include_dashboard": False}
        )
        cluster.add_node(num_cpus=1, env_vars={KEY_VAR: ""})
        cluster.wait_for_nodes(timeout=60)
        return cluster
    except Exception as e:  # a raylet gives its agents 15 s to start: a loaded machine can miss that
        if cluster is not None:
            cluster.shutdown()
        pytest.skip(f"Ray could not start a local cluster on this machine: {e}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ[KEY_VAR] = "k"  # before the nodes start: the head's raylet and workers inherit it
    # the strategies' modules (llama-index, seconds of imports) load meanwhile, not in the first run
    warm = threading.Thread(target=available, daemon=True)
    warm.start()
    c = _start_cluster()
    warm.join()
    ray.init(address=c.address, include_dashboard=False, logging_level="WARNING")
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        os.environ.pop(KEY_VAR, None)


def _later_turns(question: str) -> bool:
    """A question of a text turn after the first ("question 1.2"): held, the first turn of each job passes."""
    return question.startswith("question ") and not question.endswith(".0")


class HeldEndpoint(ScriptedEndpoint):
    """The echo endpoint; the questions ``held`` picks wait unanswered until it is None again."""

    def __init__(self, default: Script) -> None:
        super().__init__(default)
        self.held: Callable[[str], bool] | None = None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            text = last_user_text(json.loads(await request.read()))  # aiohttp keeps the body for the handler
        except (ValueError, AttributeError):
            text = ""
        while (held := self.held) is not None and held(text):
            await asyncio.sleep(0.05)
        return await super()._chat(request)


def _dataset(root: Path) -> Path:
    """Three text conversations of three turns (c0-c2) and one voice conversation of one turn (v0)."""
    ds = make_dataset(root / "ds", conversations=3, turns=3)
    voiced = voice_dataset(root / "voiced", turns=1)
    shutil.copytree(voiced / "audio", ds / "audio")
    line = (voiced / "conversations.jsonl").read_text().replace('"id": "c0"', '"id": "v0"')
    with (ds / "conversations.jsonl").open("a") as f:
        f.write(line)
    return ds


def _config(path: Path, ep: ScriptedEndpoint, state: Path, **extra: Any) -> Path:
    llm = {"kind": "openai", "base_url": ep.base_url, "model": ep.model, "timeout_s": 180}
    path.write_text(json.dumps({"llm": llm, "state_dir": str(state), **extra}))
    return path


def _suite(tmp_path: Path, ep: ScriptedEndpoint) -> Suite:
    return Suite(
        dataset=_dataset(tmp_path),
        # held questions wait for the faults (a slot's restart): longer than the strategies' own timeouts allow
        strategies={name: {"kind": "plain", "first_chunk_timeout_s": 180} for name in ("plain", "second")},
        turn_timeout_s=180,
        config=_config(tmp_path / "workbench.yaml", ep, tmp_path / "state"),
        mode="both",
        conversations={"ids": ["c0", "c1", "c2"]},
        voice={"conversations": {"ids": ["v0"]}, "concurrency": 2},
        components=LIGHT_COMPONENTS,
        concurrency=1,
        executor={"kind": "ray", "slots": 2, "cpus_per_slot": 1},
    )


def _content(df: pd.DataFrame) -> pd.DataFrame:
    return df[SAME].sort_values(list(KEY)).reset_index(drop=True).astype(str)


async def _until(ok: Callable[[], bool], run: asyncio.Task[Any], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if run.done():
            run.result()  # its exception, if it failed
            raise AssertionError(f"the run ended before {what}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _journal_nodes(path: Path) -> set[str]:
    """The nodes of the turns stored so far."""
    lines = path.read_text().splitlines() if path.exists() else []
    return {json.loads(line).get("executor_node") for line in lines if line.strip()}


@pytest.mark.timeout(300)
async def test_ray_rows_equal_in_process_rows_through_failed_checks_a_killed_slot_and_a_dead_node(
    cluster, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    head = cluster.head_node.node_id
    second = next(iter(cluster.worker_nodes))
    with HeldEndpoint(Script(ttft_s=0.05)) as ep:  # echo: each answer names its question
        suite = _suite(tmp_path, ep)
        local = await arun(suite, runs_dir=runs, executor="inprocess", progress=False)
        local_df = read_rows(local.path)
        total = 2 * 3 * 3 + 2 * 1  # strategies x (text conversations x turns + voice turns)
        assert len(local_df) == total and local_df["error_kind"].isna().all()
        assert local_df["executor_node"].isna().all() and local_df["executor_slot"].isna().all()
        assert local_df.loc[local_df["mode"] == "voice", "transcript"].eq("question").all()  # ToneSTT heard it

        # 1. the driver lost a run after some turns; it resumes on Ray with a config whose key variable the
        # second node lacks: the slot there fails its checks, is reported with its node, and gets no jobs
        lost = runs / "lost"
        lost.mkdir()
        keyed = {"probe": {"use": "livekit.plugins.openai:LLM", "model": "m", "api_key_env": KEY_VAR}}
        keyed_config = _config(tmp_path / "keyed.yaml", ep, tmp_path / "state", endpoints=keyed)
        manifest = json.loads((local.path / MANIFEST_FILE).read_text())
        manifest["suite"]["config"] = str(keyed_config)
        (lost / MANIFEST_FILE).write_text(json.dumps(manifest | {"run_id": "lost", "status": "interrupted"}))
        c = local_df["conversation_id"]
        gone = (c == "c2") | ((c == "c1") & (local_df["turn_index"] == 2))
        (lost / JOURNAL_FILE).write_text(local_df[~gone].to_json(orient="records", lines=True))
        checked = RayExecutor(address=cluster.address, slots=2, cpus_per_slot=1)
        resumed = await arun(suite, resume=lost, runs_dir=runs, executor=checked, progress=False)
        assert resumed.skipped == int((~gone).sum()) and resumed.rows == int(gone.sum())
        assert json.loads((lost / MANIFEST_FILE).read_text())["status"] == "complete" and (lost / TURNS_FILE).exists()
        again = read_rows(lost)
        pd.testing.assert_frame_equal(_content(again), _content(local_df))
        passed, failed = sorted(checked.records, key=lambda r: not r.ok)
        assert (passed.ok, passed.node, passed.problem) == (True, head, None)
        assert failed.ok is False and failed.node == second.node_id and KEY_VAR in (failed.problem or "")
        assert again.loc[gone.to_numpy(), "executor_slot"].eq(passed.slot).all()

        # 2. on Ray, while every job's later turns wait (so each fault lands mid-job): a slot is killed (replaced on
        # its node, whose CPU it freed), then the second node is lost (its slot's replacement fits nowhere: dropped
        # after placement_timeout_s); the slot left runs the rest and the voice jobs
        executor = RayExecutor(address=cluster.address, slots=2, cpus_per_slot=1, placement_timeout_s=3)
        journal = runs / "on-ray" / JOURNAL_FILE
        ep.held = _later_turns
        try:
            run = asyncio.create_task(arun(suite, runs_dir=runs, run_id="on-ray", executor=executor, progress=False))
            await _until(lambda: len(_journal_nodes(journal)) == 2, run, "a first turn on each node")
            ray.kill(executor.handles[0])
            await _until(lambda: sum(r.ok is True for r in executor.records) == 3, run, "a replacement")
            await asyncio.to_thread(cluster.remove_node, second)
            await _until(lambda: any("not placed" in (r.problem or "") for r in executor.records), run, "a drop")
        finally:
            ep.held = None
        on_ray = await run
    ray_df = read_rows(on_ray.path)
    assert len(ray_df) == total and on_ray.rows == total  # every turn once: none redone or lost
    pd.testing.assert_frame_equal(_content(ray_df), _content(local_df))
    assert set(ray_df["executor_node"]) == {head, second.node_id} and set(ray_df["executor_slot"]) == {0, 1}
    assert ray_df.loc[ray_df["mode"] == "voice", "executor_node"].eq(head).all()  # the only node left
    # the calls recorded on a slot travel back with the rows: the driver's run folder has each voice call's file
    voiced = ray_df[ray_df["mode"] == "voice"]
    assert voiced["call_audio"].notna().all() and voiced["heard_v2v_s"].notna().all()
    for rel in voiced["call_audio"]:
        assert sf.info(str(on_ray.path / rel)).duration > voiced["call_offset_s"].max()
    assert ray_df["slot_load"].ge(0).all() and ray_df["node_load"].between(0, 100).all()
    assert executor.restarts == 2 and len(executor.records) == 4
    problems = [(r.problem or "").split(":")[0] for r in executor.records]
    assert sorted(problems) == ["", "lost mid-run", "lost mid-run", "not placed within 3 s"]
    assert [(r.node, r.ok) for r in executor.records if r.problem is None] == [(head, True)]  # finished the run
    assert all(r.ok and "lost mid-run" in (r.problem or "") for r in executor.records if r.node == second.node_id)
    assert [(r.node, r.ok) for r in executor.records if "not placed" in (r.problem or "")] == [(None, False)]
    slots = json.loads((on_ray.path / MANIFEST_FILE).read_text())["executor_slots"]  # what the run reports
    assert sorted((s["slot"], s["ok"], s["problem"] or "") for s in slots) == sorted(
        (r.slot, r.ok, r.problem or "") for r in executor.records
    )
