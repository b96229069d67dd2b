"""Where a run's jobs run: in this process (:class:`InProcessExecutor`, the default) or on Ray actors
(:class:`RayExecutor`), one per *slot*, each with its own model stack.

Both call :func:`workbench.workflows.runner.replay_job`, the work of one job; the runner keeps the store. On
Ray, each finished turn streams back to the driver (the slot's method is a generator), which appends it to the
run's store at once, so durability, the manifest and ``--resume`` are those of an in-process run. A slot that
dies mid-job is replaced and the job continues after its last stored turn, on whichever slot is free: no
turn is lost or written twice. Ray is imported only when :class:`RayExecutor` runs (it costs seconds).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
from pathlib import Path
from typing import Any, Protocol

from workbench.workflows.runner import Job, Work, build_strategies, heap_frozen, replay_job, warm_up
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
    """A slot died more often than ``max_slot_restarts`` allows."""


class RayExecutor:
    """Jobs on Ray actors: ``slots`` of them, each reserving ``cpus_per_slot`` CPUs and building its own model
    stack (its own local LLM server, STT and TTS) from the run's config, which travels as a plain dict.

    ``address``: a running cluster (``"auto"``, ``"HOST:PORT"``); None: Ray starts locally (and is shut down at
    the end). When this process is already connected to Ray, that connection is used and left open. A slot runs
    ``concurrency`` text jobs (then ``voice.concurrency`` voice jobs) at once, as the in-process runner would.

    Paths travel as they are: the dataset (made absolute here), the config's state folder and your ``imports``
    must be reachable from every node. A ``stack`` passed to the runner lends only its config: what was patched
    onto the object (fake components) stays in this process.
    """

    def __init__(
        self,
        address: str | None = None,
        slots: int = 2,
        cpus_per_slot: float = 1.0,
        *,
        max_slot_restarts: int = 3,
    ) -> None:
        self.address = address
        self.slots = slots
        self.cpus_per_slot = cpus_per_slot
        self.max_slot_restarts = max_slot_restarts
        self.handles: list[Any] = []  # the live slot actors (index = slot), for inspection and fault tests
        self.restarts = 0

    async def execute(self, work: Work) -> None:
        import ray

        own = not ray.is_initialized()
        if own:
            ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
        suite_data = work.suite.model_dump(mode="json")
        suite_data["dataset"] = str(Path(work.suite.dataset).resolve())
        config_data = work.config.model_dump(mode="json")
        lanes = max(work.concurrency, work.suite.voice.concurrency)
        slot_cls = _slot_class().options(num_cpus=self.cpus_per_slot, max_concurrency=lanes + 1)

        def new_slot(i: int) -> Any:
            return slot_cls.remote(i, suite_data, config_data)

        self.handles = [new_slot(i) for i in range(self.slots)]
        try:
            for mode, per_slot in (("text", work.concurrency), ("voice", max(1, work.suite.voice.concurrency))):
                queue = collections.deque(j for j in work.jobs if j.mode == mode and work.pending(j))
                if queue:  # voice after text, as in-process: CPU-heavy voice sessions must not distort text latencies
                    await asyncio.gather(
                        *(self._lane(i, queue, work, new_slot) for i in range(self.slots) for _ in range(per_slot))
                    )
        finally:
            await self._close(ray)
            if own:
                ray.shutdown()

    async def _lane(self, i: int, queue: collections.deque[Job], work: Work, new_slot: Any) -> None:
        """One of slot ``i``'s concurrent lanes: takes jobs until none is left."""
        import ray

        while queue:
            job = queue.popleft()
            handle = self.handles[i]
            spec = {
                "strategy": job.strategy,
                "mode": job.mode,
                "voice": job.voice,
                "conversation_id": job.conversation.id,
                "repetition": job.repetition,
            }
            try:
                async for ref in handle.run.remote(spec, work.prior(job)):
                    work.finish_turn(job, await ref)
            except ray.exceptions.RayActorError as e:
                queue.appendleft(job)  # its finished turns are stored: it continues after them, on any slot
                if self.handles[i] is handle:  # the first of the slot's lanes to see the death replaces it
                    self.restarts += 1
                    if self.restarts > self.max_slot_restarts:
                        raise SlotLostError(f"slot {i} died ({e}); {self.restarts - 1} slots restarted already") from e
                    log.warning("slot %d died mid-job (%s); starting a new one", i, e)
                    self.handles[i] = new_slot(i)

    async def _close(self, ray: Any) -> None:
        handles, self.handles = self.handles, []
        for h in handles:
            try:
                await asyncio.wait_for(h.close.remote(), timeout=30)
            except Exception as e:  # a dead slot has nothing to close
                log.debug("closing a slot: %s", e)
            ray.kill(h)


def _slot_class() -> Any:
    """The Ray actor class (defined here so that ``ray`` is imported only when the Ray executor runs)."""
    import ray

    @ray.remote
    class Slot:
        """One slot: its own model stack, dataset and strategies, built on the first job and kept."""

        def __init__(self, index: int, suite_data: dict[str, Any], config_data: dict[str, Any]) -> None:
            self.index = index
            self.suite_data = suite_data
            self.config_data = config_data
            self.ready: asyncio.Lock | None = None
            self.stack: Any = None
            self.strategies: dict[str, Any] = {}

        async def _setup(self) -> None:
            from workbench.core.config import WorkbenchConfig
            from workbench.models import ModelStack
            from workbench.replay.dataset import load_dataset
            from workbench.workflows.suite import suite_from_dict

            self.ready = self.ready or asyncio.Lock()
            async with self.ready:
                if self.stack is not None:
                    return
                self.suite = suite_from_dict(self.suite_data)
                self.dataset = load_dataset(self.suite.dataset)
                self.conversations = {c.id: c for c in self.dataset.conversations}
                stack = ModelStack(WorkbenchConfig.model_validate(self.config_data))
                self.strategies = build_strategies(self.suite, stack)
                await warm_up(self.strategies.values())
                gc.collect()
                gc.freeze()  # a slot's process lives for the run: keep the collector off what is loaded
                self.node = ray.get_runtime_context().get_node_id()
                self.stack = stack

        async def run(self, spec: dict[str, Any], prior: list[dict[str, Any]]) -> Any:
            """Replay one job; yields each finished turn's row with where it ran and the node's load meanwhile."""
            await self._setup()
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
            before = _cpu_times()
            try:
                while (row := await rows.get()) is not end:
                    now = _cpu_times()
                    row.update(executor_node=self.node, executor_slot=self.index, slot_load=_busy_percent(before, now))
                    before = now
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
        return RayExecutor(address=opts.address, slots=opts.slots, cpus_per_slot=opts.cpus_per_slot)
    return InProcessExecutor()
