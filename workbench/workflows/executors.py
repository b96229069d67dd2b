"""Where a run's jobs run: in this process (:class:`InProcessExecutor`, the default) or on Ray actors
(:class:`RayExecutor`), one per *slot*, each with its own model stack.

Both call :func:`workbench.workflows.runner.replay_job`, the work of one job; the runner keeps the store. On
Ray, each finished turn streams back to the driver (the slot's method is a generator), which appends it to the
run's store at once, so durability, the manifest and ``--resume`` are those of an in-process run.

Before a slot gets work, the driver has it run the workbench's pre-run checks on its own node (its stack and
strategies built, one warm-up request each): a slot that fails them, or that no node has room for within
``placement_timeout_s``, is reported and gets no jobs. A slot that dies mid-job (killed, or its node lost) is
replaced, and its job continues after its last stored turn on whichever slot is free: no turn is lost or
written twice. A replacement that cannot be placed (its node's CPUs went with the node) is dropped after
``placement_timeout_s`` and the remaining slots finish the queue. Ray is imported only when
:class:`RayExecutor` runs (it costs seconds).

The scheduling (:class:`SlotScheduler`) knows nothing of Ray: it drives a :class:`SlotBackend`, so its
decisions are tested without a cluster (``tests/unit/test_executors.py``).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from workbench.workflows.runner import Job, Work, build_strategies, heap_frozen, probe, replay_job, warm_up
from workbench.workflows.suite import ExecutorOptions

log = logging.getLogger(__name__)


class Executor(Protocol):
    async def execute(self, work: Work) -> None:
        """Run every pending job of ``work``, handing each finished turn to ``work.finish_turn``."""


class InProcessExecutor:
    """Today's behaviour: jobs run in this process on the runner's stack, text jobs first (``concurrency`` at
    once), then voice jobs (``voice.concurrency`` at once), after one unrecorded warm-up turn per strategy."""

    async def execute(self, work: Work) -> None:
        strategies = build_strategies(work.suite, work.stack)

        async def do(job: Job, sem: asyncio.Semaphore) -> None:
            if not work.pending(job):
                return
            async with sem:
                await replay_job(
                    job,
                    stack=work.stack,
                    strategy=strategies[job.strategy],
                    suite=work.suite,
                    dataset=work.dataset,
                    prior=work.prior(job),
                    emit=lambda row: work.finish_turn(job, row),
                )

        try:
            text_jobs = [j for j in work.jobs if j.mode == "text"]
            voice_jobs = [j for j in work.jobs if j.mode == "voice"]
            await warm_up(strategies.values())
            with heap_frozen():
                sem = asyncio.Semaphore(work.concurrency)
                await asyncio.gather(*(do(j, sem) for j in text_jobs))
                if voice_jobs:  # after text: CPU-heavy voice sessions must not distort text latencies (or each other's)
                    vsem = asyncio.Semaphore(max(1, work.suite.voice.concurrency))
                    await asyncio.gather(*(do(j, vsem) for j in voice_jobs))
        finally:
            for s in strategies.values():
                await s.aclose()


class SlotLostError(RuntimeError):
    """No slot is left to run the remaining jobs: every slot failed its checks, found no room on any node, or
    was lost with its restarts used up. The message lists each slot's node and problem."""


@dataclasses.dataclass
class SlotRecord:
    """One slot actor as the run's manifest reports it (``executor_slots``); a replacement gets its own record.

    ``ok``: it passed its checks (None: not checked yet). ``problem``: why it got no jobs (failed checks, not
    placed in time), or why it stopped getting them (lost mid-run); None for a slot that served to the end."""

    slot: int
    node: str | None = None
    ok: bool | None = None
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def label(self) -> str:
        return f"slot {self.slot} (node {self.node[:8] if self.node else 'unknown'})"


class SlotBackend(Protocol):
    """What :class:`SlotScheduler` needs from a kind of slot (Ray actors; fakes in the unit tests)."""

    def start(self, index: int) -> Any:
        """A new slot for index ``index``: a handle at once, the slot itself once some node has room for it."""

    async def placed(self, handle: Any) -> str:
        """The slot's node id, once a node has room for it (never returns while none has); it may still be
        starting there: :meth:`check` waits for that."""

    async def check(self, handle: Any) -> dict[str, Any]:
        """The slot's pre-run checks on its node: ``{"node": ..., "ok": bool, "problems": [str, ...]}``."""

    def run(self, handle: Any, job: Job, prior: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """Replay ``job`` on the slot after its stored turns ``prior``, yielding each finished turn's row."""

    def lost(self, error: BaseException) -> bool:
        """``error`` means the slot (or its node) is gone, not that the job failed."""

    async def stop(self, handle: Any, *, graceful: bool) -> None:
        """Release the slot (``graceful``: let it close its stack first)."""


@dataclasses.dataclass
class _Incarnation:
    """One actor behind slot ``index``: ``ready`` resolves to its handle once it passed its checks, or to None
    when it gets no jobs (failed, not placed, run over)."""

    index: int
    handle: Any
    record: SlotRecord
    ready: asyncio.Future[Any]
    bring_up: asyncio.Task[None] | None = None


class _JobQueue:
    """The jobs of one phase (text, then voice). A lane leaves only when no job is queued *and* none is running:
    a running job whose slot dies comes back to the queue for whichever lane is still there."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.queue: collections.deque[Job] = collections.deque(jobs)
        self.running = 0
        self.finished = asyncio.Event()
        self._changed = asyncio.Event()
        if not self.queue:
            self.finished.set()

    async def take(self) -> Job | None:
        """The next job, or None when every job is done."""
        while True:
            if self.queue:
                self.running += 1
                return self.queue.popleft()
            if self.running == 0:
                self.finished.set()
                return None
            # no await between the check above and wait(): a change cannot slip in between (one event loop)
            self._changed.clear()
            await self._changed.wait()

    def done(self, job: Job, *, again: bool = False) -> None:
        """``job`` left its lane: finished, or (``again``) back to the front of the queue, to continue elsewhere."""
        self.running -= 1
        if again:
            self.queue.appendleft(job)
        if not self.queue and self.running == 0:
            self.finished.set()
        self._changed.set()


class SlotScheduler:
    """Hands a run's jobs to slots: each slot is checked before it gets work, lanes (``concurrency`` per slot)
    take jobs from one queue per phase, and a slot lost mid-job is replaced while its job goes back to the queue.

    ``placement_timeout_s``: how long a slot (a first one or a replacement) may wait for a node with room for
    it; after it, the slot is dropped (reported) and the others go on. ``check_timeout_s``: how long it may
    then take to start and pass its checks (stack build, one warm-up request per strategy).
    ``max_slot_restarts``: replacements per run, all slots together; a slot lost after that is dropped.
    ``on_change(records)`` gets every slot's :meth:`SlotRecord.as_dict` whenever one changes (the runner's
    manifest). The run fails with :class:`SlotLostError` only when jobs are left and no slot is.
    """

    def __init__(
        self,
        backend: SlotBackend,
        options: ExecutorOptions,
        *,
        on_change: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.backend = backend
        self.slots = options.slots
        self.placement_timeout_s = options.placement_timeout_s
        self.check_timeout_s = options.check_timeout_s
        self.max_slot_restarts = options.max_slot_restarts
        self.on_change = on_change
        self.records: list[SlotRecord] = []
        self.restarts = 0
        self.current: dict[int, _Incarnation] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        # perf_counter marks: start, first_ready (a slot passed its checks), done (the last job), end (slots stopped)
        self.timeline: dict[str, float] = {}

    @property
    def handles(self) -> list[Any]:
        """The current actor of each slot (index = slot), for inspection and fault tests."""
        return [self.current[i].handle for i in sorted(self.current)]

    async def execute(self, work: Work, phases: Sequence[tuple[Sequence[Job], int]]) -> None:
        """Run each phase's pending jobs (``(jobs, lanes per slot)``, in order) and stop every slot at the end."""
        self.timeline["start"] = time.perf_counter()
        pending = [[j for j in jobs if work.pending(j)] for jobs, _ in phases]
        if not any(pending):
            return
        try:
            for i in range(self.slots):
                self._launch(i)
            self._changed()
            for jobs, (_, lanes) in zip(pending, phases, strict=True):
                queue = _JobQueue(jobs)
                if queue.finished.is_set():
                    continue
                tasks = [
                    asyncio.create_task(self._lane(i, queue, work)) for i in range(self.slots) for _ in range(lanes)
                ]
                try:
                    await asyncio.gather(*tasks)
                finally:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                if queue.queue:
                    raise SlotLostError(self._no_slot_left(len(queue.queue)))
            self.timeline["done"] = time.perf_counter()
        finally:
            await self._shutdown()
            self.timeline["end"] = time.perf_counter()

    # -- slots -------------------------------------------------------------------------------
    def _launch(self, index: int) -> _Incarnation:
        inc = _Incarnation(
            index, self.backend.start(index), SlotRecord(index), asyncio.get_running_loop().create_future()
        )
        self.records.append(inc.record)
        self.current[index] = inc
        inc.bring_up = asyncio.create_task(self._bring_up(inc))
        return inc

    async def _bring_up(self, inc: _Incarnation) -> None:
        """Wait (bounded) for the slot to be placed, then run its checks; it gets jobs only if they pass."""
        rec, problem, died = inc.record, None, None
        try:
            try:
                rec.node = await asyncio.wait_for(self.backend.placed(inc.handle), self.placement_timeout_s)
            except TimeoutError:
                problem = f"not placed within {self.placement_timeout_s:g} s: no node had room for it"
            except Exception as e:
                problem, died = f"did not start: {_short(e)}", e if self.backend.lost(e) else None
            if problem is None:
                try:
                    report = await asyncio.wait_for(self.backend.check(inc.handle), self.check_timeout_s)
                except TimeoutError:
                    problem = f"its checks did not finish within {self.check_timeout_s:g} s"
                except Exception as e:
                    problem, died = f"its checks could not run: {_short(e)}", e if self.backend.lost(e) else None
                else:
                    rec.node = report.get("node") or rec.node
                    problems = [str(p) for p in report.get("problems") or []]
                    if report.get("ok") and not problems:
                        rec.ok = True
                        self.timeline.setdefault("first_ready", time.perf_counter())
                        log.info("%s passed its checks", rec.label())
                        inc.ready.set_result(inc.handle)
                        self._changed()
                        return
                    problem = "; ".join(problems) or "its checks failed"
        except asyncio.CancelledError:  # the run is over (or failed) before this slot was ready
            rec.problem = rec.problem or "still starting when the run ended"
            if not inc.ready.done():
                inc.ready.set_result(None)
            self._changed()
            raise
        rec.ok = False
        if died is not None:  # killed, or its node lost, while starting: replaced like a slot lost mid-job
            self._lost(inc, died, when="while starting")
            inc.ready.set_result(None)
            return
        rec.problem = problem
        log.warning("%s gets no jobs: %s", rec.label(), problem)
        inc.ready.set_result(None)
        self._changed()
        await self._stop(inc.handle, graceful=False)  # a pending actor would take a node's CPUs when one frees up

    def _lost(self, inc: _Incarnation, error: BaseException, when: str = "mid-run") -> None:
        """Slot ``inc`` died (mid-job, or while starting): replace it (once, however many of its lanes saw it),
        or drop it once the run's restarts are used up."""
        if self.current.get(inc.index) is not inc:
            return  # already replaced: this lane held the old handle
        inc.record.problem = f"lost {when}: {_short(error)}"
        stopping = asyncio.create_task(self._stop(inc.handle, graceful=False))
        self._stopping.add(stopping)  # a task nobody holds may be collected before it ran
        stopping.add_done_callback(self._stopping.discard)
        if self.restarts >= self.max_slot_restarts:
            inc.record.problem += f"; not replaced: {self.restarts} restarts used, the limit"
            log.warning("%s died (%s) and is not replaced: %d restarts used", inc.record.label(), error, self.restarts)
            dropped = _Incarnation(inc.index, None, inc.record, asyncio.get_running_loop().create_future())
            dropped.ready.set_result(None)
            self.current[inc.index] = dropped
        else:
            self.restarts += 1
            log.warning("%s died %s (%s); starting a new one", inc.record.label(), when, _short(error))
            self._launch(inc.index)
        self._changed()

    async def _ready(self, index: int, queue: _JobQueue) -> tuple[_Incarnation, Any]:
        """Slot ``index``'s actor once it is ready (None: it gets no jobs, or the phase is done meanwhile)."""
        inc = self.current[index]
        if not inc.ready.done():
            finished = asyncio.create_task(queue.finished.wait())
            try:
                await asyncio.wait({inc.ready, finished}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                finished.cancel()
        return inc, inc.ready.result() if inc.ready.done() else None

    async def _lane(self, index: int, queue: _JobQueue, work: Work) -> None:
        """One of slot ``index``'s concurrent lanes: takes jobs until none is left or the slot is dropped."""
        while True:
            inc, handle = await self._ready(index, queue)
            if handle is None:
                if self.current[index] is not inc and not queue.finished.is_set():
                    continue  # it died while starting and was replaced: wait for the new one
                return
            job = await queue.take()
            if job is None:
                return
            try:
                async for row in self.backend.run(handle, job, work.prior(job)):
                    work.finish_turn(job, row)
            except Exception as e:
                if not self.backend.lost(e):
                    queue.done(job)
                    raise
                queue.done(job, again=True)  # its finished turns are stored: it continues after them, on any slot
                self._lost(inc, e)
            else:
                queue.done(job)

    async def _shutdown(self) -> None:
        await asyncio.gather(*list(self._stopping))
        starting = [inc.bring_up for inc in self.current.values() if inc.bring_up and not inc.bring_up.done()]
        for task in starting:
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        await asyncio.gather(
            *(
                self._stop(inc.handle, graceful=inc.record.ok is True)
                for inc in self.current.values()
                if inc.handle is not None
            )
        )
        self._changed()

    async def _stop(self, handle: Any, *, graceful: bool) -> None:
        try:
            await self.backend.stop(handle, graceful=graceful)
        except Exception as e:  # a dead slot has nothing to close
            log.debug("stopping a slot: %s", e)

    def _changed(self) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change([r.as_dict() for r in self.records])
        except Exception as e:  # reporting must not end a run
            log.warning("could not record the slots: %s", e)

    def _no_slot_left(self, left: int) -> str:
        problems = "; ".join(f"{r.label()}: {r.problem}" for r in self.records if r.problem)
        return f"no Ray slot is left to run the remaining {left} job(s): {problems or 'no slot was started'}"


def _short(e: BaseException, limit: int = 300) -> str:
    """An error on one line (Ray's carry the remote traceback), for logs and the manifest."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


class RayExecutor:
    """Jobs on Ray actors: ``slots`` of them, each reserving ``cpus_per_slot`` CPUs and building its own model
    stack (its own local LLM server, STT and TTS) from the run's config, which travels as a plain dict.

    ``address``: a running cluster (``"auto"``, ``"HOST:PORT"``); None: Ray starts locally (and is shut down at
    the end). When this process is already connected to Ray, that connection is used and left open. A slot runs
    ``concurrency`` text jobs (then ``voice.concurrency`` voice jobs) at once, as the in-process runner would.

    Each slot runs the pre-run checks on its node first (:meth:`Slot.check`); the slots' outcomes are in
    :attr:`records` and, when the runner offers ``work.update_manifest``, in the run's manifest as
    ``executor_slots``. ``options`` is the suite's ``executor:`` section (keyword arguments override its fields:
    ``RayExecutor(slots=2)``); ``placement_timeout_s``, ``check_timeout_s``, ``max_slot_restarts``: see
    :class:`SlotScheduler`.

    Paths travel as they are: the dataset (made absolute here), the config's state folder and your ``imports``
    must be reachable from every node. A ``stack`` passed to the runner lends only its config: what was patched
    onto the object (fake components) stays in this process; name light components in the config instead
    (``stt: {use: "workbench.faults.speech:FixedDelaySTT"}``).
    """

    def __init__(self, options: ExecutorOptions | None = None, **overrides: Any) -> None:
        self.options = ExecutorOptions.model_validate(
            {**(options or ExecutorOptions()).model_dump(), **overrides, "kind": "ray"}
        )
        self.scheduler: SlotScheduler | None = None  # the last run's, for inspection

    @property
    def handles(self) -> list[Any]:
        """The live slot actors (index = slot; None: dropped, or not started yet), for inspection and fault tests."""
        return [getattr(h, "actor", None) for h in self.scheduler.handles] if self.scheduler else []

    @property
    def records(self) -> list[SlotRecord]:
        """Every slot actor of the last run: node, checks passed, problem."""
        return self.scheduler.records if self.scheduler else []

    @property
    def restarts(self) -> int:
        return self.scheduler.restarts if self.scheduler else 0

    async def execute(self, work: Work) -> None:
        import ray

        own = not ray.is_initialized()
        if own:
            ray.init(address=self.options.address, include_dashboard=False, logging_level=logging.WARNING)
        suite_data = work.suite.model_dump(mode="json")
        suite_data["dataset"] = str(Path(work.suite.dataset).resolve())
        config_data = work.config.model_dump(mode="json")
        per_voice = max(1, work.suite.voice.concurrency)
        lanes = max(work.concurrency, per_voice)
        options = {"num_cpus": self.options.cpus_per_slot, "max_concurrency": lanes + 2}
        record = getattr(work, "update_manifest", None)  # the runner's store, when it offers it
        self.scheduler = SlotScheduler(
            _RayBackend(ray, _slot_class(), options, suite_data, config_data),
            self.options,
            on_change=(lambda records: record(executor_slots=records)) if callable(record) else None,
        )
        phases = [  # voice after text, as in-process: CPU-heavy voice sessions must not distort text latencies
            ([j for j in work.jobs if j.mode == "text"], work.concurrency),
            ([j for j in work.jobs if j.mode == "voice"], per_voice),
        ]
        try:
            await self.scheduler.execute(work, phases)
        finally:
            if own:
                ray.shutdown()


@dataclasses.dataclass
class _RaySlot:
    """A slot on Ray: a placement group reserving its CPUs on one node, then the actor started inside it."""

    index: int
    group: Any
    actor: Any = None


class _RayBackend:
    """:class:`SlotBackend` on Ray: each slot reserves its CPUs with a one-bundle placement group first, so
    "placed" means a node had room (the GCS answers at once) and not also that the slot's process has started
    and imported the workbench, which takes seconds more on a busy node and is bounded by the check's timeout.
    """

    def __init__(
        self, ray: Any, slot_cls: Any, options: dict[str, Any], suite_data: dict[str, Any], config_data: dict[str, Any]
    ) -> None:
        self.ray = ray
        self.slot_cls = slot_cls
        self.options = options  # num_cpus and max_concurrency of each slot actor
        self.suite_data = suite_data
        self.config_data = config_data
        ex = ray.exceptions
        # the actor, its worker process or its node is gone: the job continues elsewhere
        self.lost_errors = (ex.RayActorError, ex.WorkerCrashedError, ex.NodeDiedError, ex.ObjectLostError)

    def start(self, index: int) -> _RaySlot:
        from ray.util.placement_group import placement_group

        return _RaySlot(index, placement_group([{"CPU": self.options["num_cpus"]}]))

    async def placed(self, handle: _RaySlot) -> str:
        """Wait for the slot's CPUs to be reserved on some node, then start its actor there."""
        from ray.util.placement_group import placement_group_table
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        while (table := await asyncio.to_thread(placement_group_table, handle.group))["state"] != "CREATED":
            await asyncio.sleep(0.1)
        strategy = PlacementGroupSchedulingStrategy(handle.group, placement_group_bundle_index=0)
        handle.actor = self.slot_cls.options(**self.options, scheduling_strategy=strategy).remote(
            handle.index, self.suite_data, self.config_data
        )
        return str(table["bundles_to_node_id"][0])

    async def check(self, handle: _RaySlot) -> dict[str, Any]:
        await handle.actor.where.remote()  # its process has started
        return dict(await handle.actor.check.remote())

    async def run(self, handle: _RaySlot, job: Job, prior: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        spec = {
            "strategy": job.strategy,
            "mode": job.mode,
            "voice": job.voice,
            "conversation_id": job.conversation.id,
            "repetition": job.repetition,
        }
        async for ref in handle.actor.run.remote(spec, prior):
            yield await ref

    def lost(self, error: BaseException) -> bool:
        return isinstance(error, self.lost_errors)

    async def stop(self, handle: _RaySlot, *, graceful: bool) -> None:
        from ray.util.placement_group import remove_placement_group

        try:
            if graceful and handle.actor is not None:
                await asyncio.wait_for(handle.actor.close.remote(), timeout=30)
        finally:
            if handle.actor is not None:
                self.ray.kill(handle.actor)
            remove_placement_group(handle.group)  # frees its CPUs: a pending one would take them when they free up


def _slot_class() -> Any:
    """The Ray actor class (defined here so that ``ray`` is imported only when the Ray executor runs)."""
    import ray

    @ray.remote
    class Slot:
        """One slot: its own model stack, dataset and strategies, built by its checks (or its first job) and kept."""

        def __init__(self, index: int, suite_data: dict[str, Any], config_data: dict[str, Any]) -> None:
            self.index = index
            self.suite_data = suite_data
            self.config_data = config_data
            self.ready: asyncio.Lock | None = None
            self.stack: Any = None
            self.strategies: dict[str, Any] = {}
            self.node_id = ray.get_runtime_context().get_node_id()
            self.process = _SlotProcess()

        async def where(self) -> str:
            """Where this slot runs; answering at all means it was placed and started."""
            return self.node_id

        async def check(self) -> dict[str, Any]:
            """The workbench's pre-run checks, on this node: factory sections that cannot be built here (a module
            not installed, a key variable not set), model packages missing here, then the stack and strategies
            built and one warm-up request per strategy; for a voice suite, the speech components loaded and one
            TTS sentence transcribed. Returns ``{"slot", "node", "ok", "problems"}``; never raises for a problem."""
            from workbench.core.config import WorkbenchConfig
            from workbench.models.components import ComponentError, check_components
            from workbench.models.stack import missing_assets

            problems: list[str] = []
            try:
                config = WorkbenchConfig.model_validate(self.config_data)
                check_components(config)
                if (missing := missing_assets(config)) is not None:
                    problems.append(" ".join(str(missing).split()))
            except ComponentError as e:
                problems.append(str(e))
            except Exception as e:
                problems.append(f"config: {_short(e)}")
            if not problems:  # building a stack that lacks its parts would only fail again, slower
                try:
                    problems += await self._setup()
                    if "voice" in self.suite.modes:
                        problems += await self._check_speech()
                except Exception as e:
                    problems.append(f"building the stack or strategies failed: {_short(e)}")
            return {"slot": self.index, "node": self.node_id, "ok": not problems, "problems": problems}

        async def _setup(self) -> list[str]:
            """Build the stack and strategies once and warm each strategy up; returns the warm-up failures."""
            from workbench.core.config import WorkbenchConfig
            from workbench.models import ModelStack
            from workbench.replay.dataset import load_dataset
            from workbench.workflows.suite import suite_from_dict

            self.ready = self.ready or asyncio.Lock()
            async with self.ready:
                if self.stack is not None:
                    return []
                self.suite = suite_from_dict(self.suite_data)
                self.dataset = load_dataset(self.suite.dataset)
                self.conversations = {c.id: c for c in self.dataset.conversations}
                stack = ModelStack(WorkbenchConfig.model_validate(self.config_data))
                self.strategies = build_strategies(self.suite, stack)
                problems = await _probe(self.strategies)
                gc.collect()
                gc.freeze()  # a slot's process lives for the run: keep the collector off what is loaded
                self.stack = stack
                return problems

        async def _check_speech(self) -> list[str]:
            """The doctor's speech checks, cut to what a voice job needs: each component loads on this node, and
            the configured TTS speaks a sentence the configured STT can take (this also warms both up)."""
            from workbench.models.doctor import PROBE_TEXT

            try:
                tts, stt = self.stack.tts(), self.stack.stt()
                self.stack.vad()
                self.stack.turn_detection()
            except Exception as e:
                return [f"speech components: {_short(e)}"]
            try:
                frames = [audio.frame async for audio in tts.synthesize(PROBE_TEXT)]
                if not frames:
                    return ["tts: no audio for a test sentence"]
                await stt.recognize(frames)
            except Exception as e:
                return [f"speech probe (TTS then STT): {_short(e)}"]
            return []

        async def run(self, spec: dict[str, Any], prior: list[dict[str, Any]]) -> Any:
            """Replay one job; yields each finished turn's row with where it ran and the load meanwhile: the slot's
            own CPU (``slot_load``, its process and children such as its LLM server) and its node's (``node_load``)."""
            problems = await self._setup()
            if problems:  # only when the driver skipped check(): the turns will record the failures
                log.warning("slot %d warm-up: %s", self.index, "; ".join(problems))
            conv = self.conversations[spec["conversation_id"]]
            job = Job(spec["strategy"], spec["mode"], spec["voice"], conv, spec["repetition"])
            rows: asyncio.Queue[Any] = asyncio.Queue()
            end = object()

            async def produce() -> None:
                try:
                    await replay_job(
                        job,
                        stack=self.stack,
                        strategy=self.strategies[job.strategy],
                        suite=self.suite,
                        dataset=self.dataset,
                        prior=prior,
                        emit=rows.put_nowait,
                    )
                finally:
                    rows.put_nowait(end)

            task = asyncio.create_task(produce())
            before, node_before = self.process.sample(), _cpu_times()
            try:
                while (row := await rows.get()) is not end:
                    now, node_now = self.process.sample(), _cpu_times()
                    row.update(
                        executor_node=self.node_id,
                        executor_slot=self.index,
                        slot_load=_process_percent(before, now),
                        node_load=_busy_percent(node_before, node_now),
                    )
                    before, node_before = now, node_now
                    yield row
                await task  # its exception, if it failed
            finally:
                if not task.done():
                    task.cancel()

        async def close(self) -> None:
            for s in self.strategies.values():
                await s.aclose()
            if self.stack is not None:
                self.stack.close()

    return Slot


async def _probe(strategies: dict[str, Any]) -> list[str]:
    """The runner's warm-up, keeping what failed: a slot whose strategies cannot answer on its node must not
    get jobs."""
    return [f"strategy {name}: warm-up turn failed: {_short(e)}" for name, e in (await probe(strategies)).items()]


class _SlotProcess:
    """CPU seconds of the slot's process and its children (its local LLM server, speech servers), per pid so a
    child started meanwhile counts from its start; with the wall clock, for a CPU % between two samples."""

    def __init__(self) -> None:
        import psutil

        self.me = psutil.Process(os.getpid())

    def sample(self) -> tuple[float, dict[int, float]]:
        import psutil

        cpu: dict[int, float] = {}
        try:
            procs = [self.me, *self.me.children(recursive=True)]
        except psutil.Error:
            procs = [self.me]
        for p in procs:
            try:
                t = p.cpu_times()
                cpu[p.pid] = t.user + t.system
            except psutil.Error:  # exited between the listing and the read
                pass
        return time.monotonic(), cpu


def _process_percent(before: tuple[float, dict[int, float]], now: tuple[float, dict[int, float]]) -> float | None:
    """CPU use between two :meth:`_SlotProcess.sample` s, in % of one CPU (``top``'s unit: 150 = 1.5 CPUs busy)."""
    span = now[0] - before[0]
    if span <= 0:
        return None
    used = sum(t - before[1].get(pid, 0.0) for pid, t in now[1].items())
    return round(100.0 * max(used, 0.0) / span, 1)


def _cpu_times() -> tuple[float, float]:
    """(busy, total) CPU seconds of this node so far, all CPUs together."""
    import psutil

    t = psutil.cpu_times()
    total = sum(t)
    return total - t.idle - getattr(t, "iowait", 0.0), total


def _busy_percent(before: tuple[float, float], now: tuple[float, float]) -> float | None:
    span = now[1] - before[1]
    return round(100.0 * (now[0] - before[0]) / span, 1) if span > 0 else None


def resolve_executor(spec: Any, options: ExecutorOptions | None = None) -> Executor:
    """An executor from ``spec``: None (the suite's ``options``), a kind (``"inprocess"``, ``"ray"``) or a mapping
    over ``options`` (``{"kind": "ray", "address": "auto"}``), or an executor object, returned as it is."""
    if spec is not None and not isinstance(spec, str | dict):
        return spec
    opts = options or ExecutorOptions()
    if isinstance(spec, str):
        spec = {"kind": spec}
    if isinstance(spec, dict):
        opts = ExecutorOptions.model_validate({**opts.model_dump(), **{k: v for k, v in spec.items() if v is not None}})
    if opts.kind == "ray":
        return RayExecutor(opts)
    return InProcessExecutor()
