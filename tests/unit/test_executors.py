"""The Ray executor's scheduling decisions without Ray: :class:`SlotScheduler` driving fake slots that fail their
checks, are never placed, or die mid-job (their node lost). The same decisions on a real local cluster are in
``tests/integration/test_ray_executor.py``; these run in milliseconds and cover the cases a cluster makes slow.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from workbench.workflows.executors import SlotLostError, SlotScheduler, _process_percent
from workbench.workflows.runner import Job, Work, start_turn
from workbench.workflows.suite import ExecutorOptions


class Lost(Exception):
    """What the fake backend raises for a slot that died (Ray's ``ActorDiedError``)."""


@dataclass
class Plan:
    """How one fake slot actor behaves."""

    node: str = "n0"
    placed: bool = True  # False: no node has room for it, ever
    problems: list[str] = field(default_factory=list)
    die_after_rows: int | None = None  # dies (its node lost) after sending this many rows
    die_in_check: bool = False  # dies (killed, its node lost) while it runs its checks


@dataclass
class FakeSlot:
    index: int
    plan: Plan
    checked: bool = False
    dead: bool = False
    rows: int = 0
    stopped: bool = False


class FakeBackend:
    """Slots that follow ``plans(index, incarnation)``; every turn takes ``turn_s``."""

    def __init__(self, plans: Callable[[int, int], Plan], turn_s: float = 0.002) -> None:
        self.plans = plans
        self.turn_s = turn_s
        self.started: collections.Counter[int] = collections.Counter()
        self.slots: list[FakeSlot] = []

    def start(self, index: int) -> FakeSlot:
        slot = FakeSlot(index, self.plans(index, self.started[index]))
        self.started[index] += 1
        self.slots.append(slot)
        return slot

    async def placed(self, handle: FakeSlot) -> str:
        if not handle.plan.placed:
            await asyncio.Event().wait()  # pending for ever, as Ray leaves an actor no node can take
        return handle.plan.node

    async def check(self, handle: FakeSlot) -> dict[str, Any]:
        await asyncio.sleep(0)
        if handle.plan.die_in_check:
            raise Lost(f"slot {handle.index} died while starting")
        handle.checked = True
        return {"node": handle.plan.node, "ok": not handle.plan.problems, "problems": handle.plan.problems}

    async def run(self, handle: FakeSlot, job: Job, prior: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        assert handle.checked, "a slot got a job before its checks passed"
        for t in range(start_turn(job, prior), len(job.conversation.turns)):
            await asyncio.sleep(self.turn_s)
            if handle.dead or (handle.plan.die_after_rows is not None and handle.rows >= handle.plan.die_after_rows):
                handle.dead = True
                raise Lost(f"slot {handle.index} died")
            handle.rows += 1
            yield {"turn_index": t, "executor_slot": handle.index, "executor_node": handle.plan.node}

    def lost(self, error: BaseException) -> bool:
        return isinstance(error, Lost)

    async def stop(self, handle: FakeSlot, *, graceful: bool) -> None:
        handle.stopped = True


def _work(conversations: int = 4, turns: int = 3) -> tuple[Work, list[tuple[Job, dict[str, Any]]]]:
    convs = [SimpleNamespace(id=f"c{c}", turns=[object()] * turns) for c in range(conversations)]
    jobs = [Job(s, "text", "", conv, 0) for conv in convs for s in ("plain", "second")]
    emitted: list[tuple[Job, dict[str, Any]]] = []
    work = Work(None, None, None, None, jobs, {}, lambda job, row: emitted.append((job, row)))  # type: ignore[arg-type]
    return work, emitted


def _every_turn_once(work: Work, emitted: list[tuple[Job, dict[str, Any]]]) -> None:
    keys = [job.key(row["turn_index"]) for job, row in emitted]
    expected = {job.key(t) for job in work.jobs for t in range(len(job.conversation.turns))}
    assert len(keys) == len(set(keys)), "a turn was written twice"
    assert set(keys) == expected, "a turn is missing"


async def test_a_slot_failing_its_checks_is_reported_with_its_node_and_gets_no_jobs() -> None:
    plans = {0: Plan("node-a"), 1: Plan("node-b", problems=["llm.api_key_env: environment variable K is not set"])}
    backend = FakeBackend(lambda i, n: plans[i])
    reported: list[list[dict[str, Any]]] = []
    scheduler = SlotScheduler(backend, ExecutorOptions(slots=2), on_change=reported.append)
    work, emitted = _work()
    await scheduler.execute(work, [(work.jobs, 2)])
    _every_turn_once(work, emitted)
    assert {row["executor_slot"] for _, row in emitted} == {0}
    assert reported[-1] == [
        {"slot": 0, "node": "node-a", "ok": True, "problem": None},
        {"slot": 1, "node": "node-b", "ok": False, "problem": "llm.api_key_env: environment variable K is not set"},
    ]
    assert all(s.stopped for s in backend.slots)  # the failed one at once, the other at the end


async def test_no_slot_passing_its_checks_fails_the_run_with_every_problem() -> None:
    backend = FakeBackend(lambda i, n: Plan(f"node-{i}", problems=[f"model package {i} is missing"]))
    scheduler = SlotScheduler(backend, ExecutorOptions(slots=2))
    work, emitted = _work()
    with pytest.raises(SlotLostError) as e:
        await scheduler.execute(work, [(work.jobs, 1)])
    assert not emitted
    text = str(e.value)
    assert "remaining 8 job(s)" in text
    assert "slot 0 (node node-0): model package 0 is missing" in text
    assert "slot 1 (node node-1): model package 1 is missing" in text


async def test_a_slot_no_node_has_room_for_is_dropped_after_the_placement_timeout() -> None:
    backend = FakeBackend(lambda i, n: Plan(f"node-{i}", placed=i == 0), turn_s=0.01)
    scheduler = SlotScheduler(backend, ExecutorOptions(slots=2, placement_timeout_s=0.05))
    work, emitted = _work()
    await scheduler.execute(work, [(work.jobs, 1)])  # 24 turns of 10 ms on slot 0: longer than the timeout
    _every_turn_once(work, emitted)
    assert scheduler.records[1].ok is False
    assert scheduler.records[1].problem == "not placed within 0.05 s: no node had room for it"
    assert backend.slots[1].stopped  # a pending actor would take the CPUs of a node that frees up


async def test_the_run_does_not_wait_for_a_slot_still_being_placed_once_the_queue_is_done() -> None:
    backend = FakeBackend(lambda i, n: Plan(f"node-{i}", placed=i == 0))
    scheduler = SlotScheduler(backend, ExecutorOptions(slots=2, placement_timeout_s=60))
    work, emitted = _work(conversations=1, turns=2)
    t0 = time.monotonic()
    await scheduler.execute(work, [(work.jobs, 1)])
    assert time.monotonic() - t0 < 5
    _every_turn_once(work, emitted)
    assert scheduler.records[1].ok is None and scheduler.records[1].problem == "still starting when the run ended"


async def test_a_slot_lost_mid_job_is_replaced_and_its_job_continues_after_its_stored_turns() -> None:
    backend = FakeBackend(lambda i, n: Plan(f"node-{i}", die_after_rows=2 if (i, n) == (0, 0) else None))
    scheduler = SlotScheduler(backend, ExecutorOptions(slots=2))
    work, emitted = _work()
    await scheduler.execute(work, [(work.jobs, 1)])
    _every_turn_once(work, emitted)
    assert scheduler.restarts == 1 and backend.started == {0: 2, 1: 1}
    first, _, replacement = scheduler.records
    assert first.ok is True and (first.problem or "").startswith("lost mid-run: Lost: slot 0 died")
    assert replacement.slot == 0 and replacement.ok is True and replacement.problem is None


async def test_a_slot_lost_while_starting_is_replaced_and_its_lanes_wait_for_the_replacement() -> None:
    backend = FakeBackend(lambda i, n: Plan(f"node-{i}", die_in_check=(i, n) == (1, 0)), turn_s=0.01)
    scheduler = SlotScheduler(backend, ExecutorOptions(slots=2))
    work, emitted = _work()
    await scheduler.execute(work, [(work.jobs, 1)])
    _every_turn_once(work, emitted)
    assert scheduler.restarts == 1 and backend.started == {0: 1, 1: 2}
    assert {row["executor_slot"] for _, row in emitted} == {0, 1}  # the replacement took jobs
    lost = scheduler.records[1]
    assert lost.ok is False and (lost.problem or "").startswith("lost while starting: Lost")


async def test_a_lost_node_whose_slot_cannot_be_replaced_leaves_the_queue_to_the_other_slots() -> None:
    """Two one-CPU nodes, two one-CPU slots: the node of slot 1 dies, and its replacement fits nowhere."""

    def plans(i: int, n: int) -> Plan:
        if i == 1:
            return Plan("node-b", die_after_rows=3) if n == 0 else Plan("node-b", placed=False)
        return Plan("node-a")

    backend = FakeBackend(plans, turn_s=0.01)
    scheduler = SlotScheduler(backend, ExecutorOptions(slots=2, placement_timeout_s=0.05))
    work, emitted = _work(conversations=6)
    await scheduler.execute(work, [(work.jobs, 2)])
    _every_turn_once(work, emitted)
    lost, replacement = (r for r in scheduler.records if r.slot == 1)
    assert lost.ok is True and lost.problem is not None and "lost mid-run" in lost.problem
    assert replacement.ok is False and replacement.problem == "not placed within 0.05 s: no node had room for it"
    assert scheduler.restarts == 1


async def test_a_lost_slot_is_dropped_once_the_restarts_are_used_and_the_run_fails_when_none_is_left() -> None:
    backend = FakeBackend(lambda i, n: Plan(f"node-{i}", die_after_rows=1 if i == 0 else None))
    scheduler = SlotScheduler(backend, ExecutorOptions(slots=2, max_slot_restarts=0))
    work, emitted = _work()
    await scheduler.execute(work, [(work.jobs, 1)])
    _every_turn_once(work, emitted)
    assert backend.started == {0: 1, 1: 1}
    assert scheduler.records[0].problem is not None and "not replaced: 0 restarts used" in scheduler.records[0].problem

    backend = FakeBackend(lambda i, n: Plan(f"node-{i}", die_after_rows=1))
    scheduler = SlotScheduler(backend, ExecutorOptions(slots=2, max_slot_restarts=1))
    work, emitted = _work()
    with pytest.raises(SlotLostError, match="no Ray slot is left to run the remaining"):
        await scheduler.execute(work, [(work.jobs, 1)])
    assert scheduler.restarts == 1 and len(emitted) == 3  # one row before each of the three deaths


async def test_phases_run_in_order_on_the_same_slots_and_a_job_error_ends_the_run() -> None:
    backend = FakeBackend(lambda i, n: Plan(f"node-{i}"))
    scheduler = SlotScheduler(backend, ExecutorOptions(slots=2))
    work, emitted = _work()
    text, voice = work.jobs[:4], work.jobs[4:]
    await scheduler.execute(work, [(text, 2), (voice, 1)])
    _every_turn_once(work, emitted)
    assert [job in text for job, _ in emitted] == sorted((job in text for job, _ in emitted), reverse=True)
    assert backend.started == {0: 1, 1: 1}

    class Broken(FakeBackend):
        async def run(self, handle: FakeSlot, job: Job, prior: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
            raise ValueError("the strategy failed")
            yield {}

    backend = Broken(lambda i, n: Plan(f"node-{i}"))
    work, _ = _work()
    with pytest.raises(ValueError, match="the strategy failed"):
        await SlotScheduler(backend, ExecutorOptions(slots=2)).execute(work, [(work.jobs, 1)])
    assert all(s.stopped for s in backend.slots)


async def test_no_slot_starts_when_every_job_is_stored_already() -> None:
    backend = FakeBackend(lambda i, n: Plan())
    work, _ = _work(conversations=1, turns=1)
    for job in work.jobs:
        work.done_rows[job.job_key] = [{"turn_index": 0}]
    await SlotScheduler(backend, ExecutorOptions(slots=2)).execute(work, [(work.jobs, 1)])
    assert not backend.slots


def test_slot_load_is_the_cpu_of_the_slot_process_and_its_children_in_percent_of_one_cpu() -> None:
    before = (10.0, {1: 5.0, 2: 1.0})
    now = (12.0, {1: 6.0, 2: 1.5, 3: 0.5})  # pid 3 started meanwhile: all its CPU is new
    assert _process_percent(before, now) == 100.0
    assert _process_percent(now, now) is None


LIGHT_COMPONENTS = {  # what a Ray slot builds for a voice run of the light world (workbench.testing.worlds)
    "stt": {"use": "workbench.faults.speech:ToneSTT", "delay_s": 0.1, "tones": {220: "question"}, "text": "other"},
    "tts": {"use": "workbench.faults.speech:FixedDelayTTS", "ttfb_s": 0.08, "seconds_per_word": 0.05},
    "vad": {"use": "workbench.faults.speech:EnergyVAD", "silence_s": 0.3},
    "turn": {"mode": "vad", "min_endpointing_delay": 0.2, "max_endpointing_delay": 1.0},
}


async def test_light_speech_components_build_from_a_suite_config_as_a_ray_slot_receives_it(tmp_path) -> None:
    """A slot gets the config as JSON (``model_dump(mode="json")``): numbers as dict keys come back as strings."""
    from workbench.core.config import WorkbenchConfig
    from workbench.faults.speech import EnergyVAD, FixedDelayTTS, ToneSTT, tone
    from workbench.models import ModelStack
    from workbench.models.audio import pcm_to_frames
    from workbench.models.components import check_components
    from workbench.workflows import Suite

    config = Suite(components=LIGHT_COMPONENTS, config=None).workbench_config()
    shipped = WorkbenchConfig.model_validate(config.model_dump(mode="json") | {"state_dir": str(tmp_path)})
    check_components(shipped)
    with ModelStack(shipped) as stack:
        stt, tts, vad = stack.stt(), stack.tts(), stack.vad()
        assert isinstance(stt, ToneSTT) and stt.tones == {220.0: "question"} and stt.delay_s == 0.1
        assert isinstance(tts, FixedDelayTTS) and tts.ttfb_s == 0.08
        assert isinstance(vad, EnergyVAD) and vad.silence_s == 0.3
        assert stack.turn_detection() == "vad"
        heard = await stt.recognize(pcm_to_frames(tone(220, 0.5), 16000))
        assert heard.alternatives[0].text == "question"
        frames = [a.frame async for a in tts.synthesize("two words")]
        assert sum(f.samples_per_channel for f in frames) >= int(2 * 0.05 * 16000)  # a tone 0.05 s a word


def test_the_suite_and_a_mapping_set_every_ray_option() -> None:
    """The suite's `executor:` section takes the slot timeouts and restarts; a mapping laid over it wins."""
    from workbench.workflows.executors import InProcessExecutor, RayExecutor, resolve_executor
    from workbench.workflows.suite import ExecutorOptions

    suite_opts = ExecutorOptions(kind="ray", slots=4, placement_timeout_s=30, check_timeout_s=60, max_slot_restarts=1)
    ex = resolve_executor(None, suite_opts)
    assert isinstance(ex, RayExecutor)
    assert ex.options == suite_opts
    ex = resolve_executor({"kind": "ray", "placement_timeout_s": 5, "address": None}, suite_opts)
    assert isinstance(ex, RayExecutor)
    assert (ex.options.placement_timeout_s, ex.options.slots, ex.options.address) == (5, 4, None)
    assert RayExecutor(suite_opts, slots=1).options == suite_opts.model_copy(update={"slots": 1})
    assert isinstance(resolve_executor("inprocess", suite_opts), InProcessExecutor)
    with pytest.raises(ValueError, match="placement_timeout_s"):
        ExecutorOptions(kind="ray", placement_timeout_s=0)
