"""``workbench run``: every strategy x mode x voice x conversation x repetition, bounded and resumable.

Rows are appended to the run folder the moment each turn finishes (see :mod:`workbench.core.store`);
``resume`` skips finished turns and continues a half-finished conversation from its stored history,
and ``reuse`` hands back the newest complete run of the same suite instead of replaying it.

One runner, two places to run: :func:`replay_job` is the work of one job, and an executor
(:mod:`workbench.workflows.executors`) decides where jobs run: in this process (the default) or on Ray
actors, whose rows come back here and are appended to the same store.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.core.aio import run_sync
from workbench.core.config import ConfigError, WorkbenchConfig
from workbench.core.io import atomic_write_bytes
from workbench.core.run import call_audio_file, resolve_runs_dir
from workbench.core.store import RunStore, new_run_id, read_rows
from workbench.models import ModelStack
from workbench.models.components import check_components
from workbench.models.stack import missing_assets
from workbench.models.versions import environment_info
from workbench.pipeline.agents import AgentFactoryError, build_user_agent
from workbench.replay.call import continue_call
from workbench.replay.dataset import load_dataset
from workbench.replay.text import history_from_rows, replay_text
from workbench.replay.voice import CALL_WAV_KEY, has_audio, replay_voice
from workbench.strategies import Strategy, build
from workbench.strategies.registry import check_endpoint, with_knowledge
from workbench.workflows.runs import Run, list_runs
from workbench.workflows.suite import FaultSuite, Selection, Suite, SuiteError, load_suite, suite_from_dict

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One conversation replayed once by one strategy in one mode (and voice variant)."""

    strategy: str
    mode: str
    voice: str
    conversation: Any
    repetition: int

    def key(self, turn_index: int) -> tuple[Any, ...]:
        return (self.strategy, self.mode, self.voice, self.conversation.id, turn_index, self.repetition)

    @property
    def job_key(self) -> tuple[Any, ...]:
        """The job's part of a row key: what the store's rows are grouped by to find a job's finished turns."""
        return (self.strategy, self.mode, self.voice, self.conversation.id, self.repetition)


@dataclass
class Work:
    """What an executor is handed: the suite, its config and data, every job, the rows already stored (a job
    continues after its last stored turn), and ``emit(job, row)``, which appends a finished turn to the run."""

    suite: Suite
    config: WorkbenchConfig
    stack: ModelStack  # the driver's stack (the in-process executor replays on it)
    dataset: Any
    jobs: list[Job]
    done_rows: dict[tuple[Any, ...], list[dict[str, Any]]]
    emit: Callable[[Job, dict[str, Any]], None]
    # the run store's manifest update: an executor records what it learnt about its slots there
    update_manifest: Callable[..., None] | None = None

    def prior(self, job: Job) -> list[dict[str, Any]]:
        return self.done_rows.get(job.job_key, [])

    def finish_turn(self, job: Job, row: dict[str, Any]) -> None:
        """Append a finished turn to the run; a job that is resumed later continues after it."""
        self.emit(job, row)
        self.done_rows.setdefault(job.job_key, []).append(row)

    def pending(self, job: Job) -> bool:
        """The job has turns the store does not hold yet."""
        return start_turn(job, self.prior(job)) < len(job.conversation.turns)

    @property
    def concurrency(self) -> int:
        """Text jobs at once (per slot on Ray): the suite's, else 1 on a local single-slot server, else 8."""
        return max(1, self.suite.concurrency or (1 if self.config.llm.kind == "local" else 8))


@dataclass
class RunResult:
    run_id: str
    path: Path
    rows: int
    skipped: int

    def load(self) -> pd.DataFrame:
        """The run's turn table (``Run.load(path).rows``)."""
        return Run.load(self.path).rows


def select(conversations: list[Any], sel: Selection | None) -> list[Any]:
    if sel is None:
        return conversations
    out = conversations
    if sel.ids:
        wanted = set(sel.ids)
        if missing := sorted(wanted - {c.id for c in conversations}):  # a typo must not shrink the run silently
            raise SuiteError(
                f"conversations.ids: {', '.join(missing)} not in the dataset (or invalid: see workbench validate)"
            )
        out = [c for c in out if c.id in wanted]
    if sel.tags:
        tags = set(sel.tags)
        out = [c for c in out if tags & set(c.tags or [])]
    return out[: sel.limit] if sel.limit else out


def _jobs(suite: Suite, conversations: list[Any], has_audio: Callable[[Any, str], bool]) -> list[Job]:
    jobs = []
    for rep in range(suite.repetitions):
        for mode in suite.modes:
            if mode == "text":
                for conv in select(conversations, suite.conversations):
                    for name in suite.strategies:
                        jobs.append(Job(name, "text", "", conv, rep))
            else:
                voiced = suite.voice.conversations  # its own selection from the whole dataset, else the suite's
                for conv in select(conversations, voiced if voiced is not None else suite.conversations):
                    for variant in suite.voice.variants:
                        if not has_audio(conv, variant):
                            continue
                        for name in suite.strategies:
                            jobs.append(Job(name, "voice", variant, conv, rep))
    return jobs


async def probe(strategies: dict[str, Strategy]) -> dict[str, Exception]:
    """One unrecorded turn per strategy: loads models and connections so the first measured turn is not a cold
    start. Returns what failed, by name (a Ray slot whose strategies cannot answer gets no jobs)."""
    from livekit.agents import llm

    failed: dict[str, Exception] = {}
    for name, s in strategies.items():
        ctx = llm.ChatContext()
        ctx.add_message(role="user", content="Hello")
        try:
            async with s.chat(chat_ctx=ctx) as stream:
                async for _ in stream:
                    pass
        except Exception as e:
            failed[name] = e
    return failed


async def warm_up(strategies: Any) -> None:
    """:func:`probe`, where a failure is only logged: the measured turns will record it properly."""
    for name, e in (await probe({s.name: s for s in strategies})).items():
        log.warning("warm-up of %s failed: %s", name, e)


@contextmanager
def heap_frozen() -> Iterator[None]:
    """Move what is loaded (models, indexes, libraries) out of the collector's way for the measured turns, so
    a full collection walking it does not pause a turn mid-measurement (0.1-0.45 s seen under load), and hand
    it back afterwards: a frozen object is never collected, and a notebook kernel outlives many runs."""
    if gc.get_freeze_count():  # someone else froze the heap (another run in this process): theirs to undo
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def build_strategies(suite: Suite, stack: ModelStack) -> dict[str, Strategy]:
    """The suite's strategies on ``stack`` (its ``imports`` first: your own strategies register on import)."""
    for module in suite.imports:
        importlib.import_module(module)
    knowledge = Path(suite.dataset) / "knowledge"
    return {name: build(with_knowledge(suite.strategy_config(name), knowledge), stack) for name in suite.strategies}


def start_turn(job: Job, prior: list[dict[str, Any]]) -> int:
    """The first turn of ``job`` the store does not hold (``len(turns)``: the job is done)."""
    return len(prior) and (max(int(r["turn_index"]) for r in prior) + 1)


async def replay_job(
    job: Job,
    *,
    stack: ModelStack,
    strategy: Strategy,
    suite: Suite,
    dataset: Any,
    prior: list[dict[str, Any]],
    emit: Callable[[dict[str, Any]], None],
) -> None:
    """The work of one job, wherever it runs: replay ``job.conversation`` from its first unstored turn (its
    history rebuilt from ``prior``, the job's stored rows), calling ``emit(row)`` as each turn finishes."""
    start = start_turn(job, prior)
    if start >= len(job.conversation.turns):
        return
    history = history_from_rows(prior) if prior else None
    try:
        if job.mode == "text":
            await replay_text(
                stack,
                strategy,
                job.conversation,
                emit=emit,
                start_turn=start,
                history=history,
                instructions=suite.instructions,
                speech_text=suite.speech_text,
                agent_factory=suite.agent,
                turn_timeout_s=suite.turn_timeout_s,
            )
        else:
            await replay_voice(
                stack,
                strategy,
                job.conversation,
                dataset=dataset,
                variant=job.voice,
                emit=emit,
                start_turn=start,
                history=history,
                instructions=suite.instructions,
                speech_text=suite.speech_text,
                agent_factory=suite.agent,
                options=suite.voice,
                record_call=True,
            )
    except Exception:
        log.exception("conversation %s (%s, %s) failed", job.conversation.id, job.strategy, job.mode)
        raise


def _suite_key(dumped: Any) -> Any:
    """A dumped suite without where it ran: the executor changes no result."""
    return {k: v for k, v in dumped.items() if k != "executor"} if isinstance(dumped, dict) else dumped


def _reusable(suite: Suite, runs_dir: Path) -> RunResult | None:
    """The newest complete run of exactly this suite in ``runs_dir``, if there is one."""
    same = _suite_key(suite.model_dump(mode="json"))
    done = list_runs(runs_dir, filter=lambda r: r.status == "complete" and _suite_key(r.manifest.get("suite")) == same)
    if not done:
        return None
    return RunResult(done[0].run_id, done[0].path, 0, int(done[0].manifest.get("rows") or 0))


def run(
    suite: Suite | str | Path,
    *,
    resume: str | Path | None = None,
    run_id: str | None = None,
    runs_dir: str | Path | None = None,
    stack: ModelStack | None = None,
    progress: bool = True,
    reuse: bool = False,
    executor: Any = None,
) -> RunResult:
    """Run a suite (or finish an interrupted run with ``resume=RUN_ID``) and return where its rows are.

    Works from scripts and from inside a running event loop (Jupyter): there the run gets its own loop
    in a thread (:func:`workbench.core.aio.run_sync`). See :func:`arun` for the arguments.
    """
    return run_sync(
        lambda: arun(
            suite,
            resume=resume,
            run_id=run_id,
            runs_dir=runs_dir,
            stack=stack,
            progress=progress,
            reuse=reuse,
            executor=executor,
        ),
        name="workbench-run",
    )


async def arun(
    suite: Suite | str | Path,
    *,
    resume: str | Path | None = None,
    run_id: str | None = None,
    runs_dir: str | Path | None = None,
    stack: ModelStack | None = None,
    progress: bool = True,
    reuse: bool = False,
    executor: Any = None,
) -> RunResult:
    """Replay ``suite`` into a new run folder under ``runs_dir`` (default: :func:`resolve_runs_dir`'s).

    ``resume``: a run id or folder to finish instead. ``reuse``: when ``runs_dir`` already holds a complete
    run of exactly this suite, return the newest such run and replay nothing. ``stack``: a model stack to
    share (closed by the caller); by default one is built from the suite's config and closed at the end.
    ``executor``: where the jobs run (:func:`workbench.workflows.executors.resolve_executor`): None (the suite's
    ``executor``), ``"inprocess"``, ``"ray"``, a mapping over the suite's options (``{"kind": "ray", "address":
    ...}``) or an executor object. A resumed run may finish on another executor than it started on.
    """
    from workbench.workflows.executors import resolve_executor  # its own module: Ray is imported only when chosen

    runs_dir = resolve_runs_dir(runs_dir)
    if resume is not None:
        path = Run.load(resume, runs_dir).path
        store = RunStore(path)
        manifest = store.read_manifest()
        suite = suite_from_dict(manifest["suite"])
        if isinstance(suite, FaultSuite):  # its endpoints are scripted per run: replaying it here would not inject
            raise SuiteError(f"run {path.name} is a fault run: run `workbench faults` on its suite again instead")
        run_id = manifest["run_id"]
    else:
        suite = suite if isinstance(suite, Suite) else load_suite(suite)
        if reuse and (done := _reusable(suite, runs_dir)) is not None:
            return done
        run_id = run_id or new_run_id(suite.name)
        path = runs_dir / run_id
    if stack is not None and suite.components:
        raise SuiteError("the suite's `components` need the runner to build the model stack: pass no `stack`")
    chosen = resolve_executor(executor, suite.executor)
    config = stack.config if stack is not None else suite.workbench_config()
    # what the stack cannot build fails here, before the run folder exists: a factory section, a model package
    check_components(config)
    for module in suite.imports:  # your own strategies register on import
        importlib.import_module(module)
    for name in suite.strategies:  # an endpoint a strategy names must exist and be one it can send to
        try:
            check_endpoint(suite.strategy_config(name), config)
        except ConfigError as e:
            raise SuiteError(f"strategies.{name}: {e}") from e
        except (KeyError, ValueError):  # an unknown kind or a bad key: build() reports it as it always has
            pass
    if (missing := missing_assets(config)) is not None:
        raise missing
    if suite.agent is not None:  # so does an agent factory that cannot be loaded or called, or returns no Agent
        try:
            await build_user_agent(suite.agent)
        except AgentFactoryError as e:
            raise SuiteError(f"agent: {e}") from e
    dataset = load_dataset(suite.dataset)
    for problem in dataset.problems:  # reported in the manifest; the valid conversations still run
        log.warning("dataset problem: %s", problem)
    jobs = _jobs(suite, dataset.conversations, has_audio)  # an unknown conversation id fails here, before the folder
    if resume is None:
        store = RunStore(path)
    own_stack = stack is None
    stack = stack or ModelStack(config)
    if resume is None:
        store.write_manifest(
            {
                "run_id": run_id,
                "name": suite.name,
                "status": "running",
                "created_at": datetime.now(UTC).isoformat(),
                "dataset": str(Path(suite.dataset).resolve()),
                "suite": suite.model_dump(mode="json"),
                "dataset_problems": [dataclasses.asdict(p) for p in dataset.problems],
                # key *names* only, never values; without this machine's folders, which a promoted file must not carry
                "workbench_config": stack.config.model_dump(mode="json", exclude={"state_dir", "runs_dir"}),
                **environment_info(stack.config),
            }
        )
    else:
        store.update_manifest(status="running", resumed_at=datetime.now(UTC).isoformat())

    existing = read_rows(path)
    done_rows: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in existing.to_dict("records"):
        job_key = (r["strategy"], r["mode"], r["voice"], r["conversation_id"], r["repetition"])
        done_rows.setdefault(job_key, []).append(r)

    total = sum(len(j.conversation.turns) for j in jobs)
    skipped = len(existing)

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=min(skipped, total), desc=f"run {run_id}", unit="turn", disable=not progress)
    written = 0

    recorded_before: dict[tuple[Any, ...], bytes | None] = {}  # a resumed call's file as the last session left it

    def emit(job: Job, row: dict[str, Any]) -> None:
        nonlocal written
        row.update(run_id=run_id, strategy=job.strategy, mode=job.mode, voice=job.voice, repetition=job.repetition)
        wav = row.pop(CALL_WAV_KEY, None)
        if wav is not None or row.get("call_offset_s") is not None:
            rel = call_audio_file(job.strategy, job.voice, job.conversation.id, job.repetition)
            row["call_audio"] = rel
            if wav is not None:  # the call so far, rewritten atomically after every turn
                if (key := job.job_key) not in recorded_before:  # the job's first turn in this session
                    resumed = bool(done_rows.get(key)) and (path / rel).exists()
                    recorded_before[key] = (path / rel).read_bytes() if resumed else None
                if (before := recorded_before[key]) is not None:
                    wav, seconds = continue_call(before, wav)
                    if row.get("call_offset_s") is not None:
                        row["call_offset_s"] += seconds
                (path / rel).parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path / rel, wav)
        store.append(row)
        written += 1
        bar.update(1)

    work = Work(suite, stack.config, stack, dataset, jobs, done_rows, emit, store.update_manifest)
    try:
        await chosen.execute(work)
        rows = store.compact()
        store.update_manifest(status="complete", finished_at=datetime.now(UTC).isoformat(), rows=rows)
    except BaseException:
        store.update_manifest(status="interrupted")
        raise
    finally:
        bar.close()
        store.close()
        if own_stack:
            stack.close()
    return RunResult(run_id, path, written, skipped)
