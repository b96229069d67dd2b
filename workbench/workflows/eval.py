"""``workbench eval``: run (or reuse) a suite's run, score it offline, check its gates, write the verdict.

The verdict is the CI contract: ``runs/<id>/verdict.json`` lists every gate x strategy with its
status (``pass``, ``fail``, ``error`` = no evidence for a required gate, ``skipped``), value, bound
and, for regressions, the paired test. The suite fails when any result is ``fail`` or ``error``.
Only the scorers whose columns the gates read are run (offline ones; a judge column that nobody
scored shows as an ``error`` verdict, never as a pass), so a latency-only suite loads no extra model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.analysis.gates import ERROR_RATE, Gate, GateResult, evaluate_gates, parse_gates
from workbench.core.io import atomic_write_json
from workbench.core.run import VERDICT_FILE, resolve_runs_dir
from workbench.core.schema import COLUMNS
from workbench.core.store import RunLockedError, RunStore
from workbench.models import ModelStack
from workbench.scoring.base import available_scorers
from workbench.scoring.persist import load_scored, score_run_folder
from workbench.workflows.runner import run as replay_run
from workbench.workflows.runs import Run
from workbench.workflows.suite import FaultSuite, Suite, load_suite

if TYPE_CHECKING:
    from workbench.models import ModelStack

VERDICT_FORMAT = 1


class EvalError(ValueError):
    """The eval cannot start (no gates, a baseline that does not exist...): the message says what to fix."""


@dataclass
class Verdict:
    """Every gate result of one run, plus what was scored and compared."""

    suite: str
    run_id: str
    run_path: Path
    results: list[GateResult]
    baseline_run: str | None = None
    scoring: list[dict[str, Any]] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    suite_path: str | None = None

    @property
    def failures(self) -> list[GateResult]:
        return [r for r in self.results if r.failed]

    @property
    def passed(self) -> bool:
        return bool(self.results) and not self.failures

    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "fail": 0, "error": 0, "skipped": 0}
        for r in self.results:
            out[str(r.status)] += 1
        return out

    def result(self, gate_index: int, strategy: str) -> GateResult | None:
        return next((r for r in self.results if r.gate_index == gate_index and r.strategy == strategy), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": VERDICT_FORMAT,
            "suite": self.suite,
            "suite_path": self.suite_path,
            "run_id": self.run_id,
            "run_path": str(self.run_path),
            "baseline_run": self.baseline_run,
            "created_at": self.created_at,
            "passed": self.passed,
            "counts": self.counts(),
            "scoring": self.scoring,
            "results": [r.to_dict() for r in self.results],
        }


# -- scoring what the gates need ------------------------------------------------------------------------
def gate_columns(gates: Iterable[Gate]) -> set[str]:
    return {g.metric for g in gates if g.metric != ERROR_RATE}


def scorers_for(columns: set[str], present: Iterable[str]) -> list[str]:
    """Offline scorers that produce a gate column the run does not already have."""

    missing = set(columns) - set(present)
    return [name for name, cls in available_scorers().items() if not cls.needs_judge and missing & set(cls.columns)]


def score_for_gates(run_path: Path, gates: list[Gate], *, stack: ModelStack | None = None) -> list[dict[str, Any]]:
    """Score ``run_path`` with the offline scorers its gates need (stored in scores.parquet); their outcomes."""

    scored = load_scored(run_path)
    if scored.rows.empty:
        return []
    names = scorers_for(gate_columns(gates), scored.rows.columns)
    if not names:
        return []
    _, scoring = score_run_folder(run_path, names, None, stack=stack)
    return [{**o, "run": run_path.name} for o in scoring.get("scorers", []) if o["name"] in names]


# -- the eval ----------------------------------------------------------------------------------------------
def _suite(suite: Suite | str | Path) -> tuple[Suite, str | None]:
    if isinstance(suite, Suite):
        return suite, None
    return load_suite(suite), str(suite)


def _record_in_manifest(run_path: Path, verdict: Verdict) -> None:
    """The manifest says how the run was judged, so ``workbench promote`` re-checks against the same baseline."""

    try:
        store = RunStore(run_path)
    except RunLockedError:
        return  # someone is writing the run: the verdict file still has everything
    try:
        store.update_manifest(
            eval={
                "baseline_run": verdict.baseline_run,
                "suite": verdict.suite,
                "suite_path": verdict.suite_path,
                "passed": verdict.passed,
                "counts": verdict.counts(),
                "at": verdict.created_at,
            }
        )
    finally:
        store.close()


def write_verdict(verdict: Verdict) -> Path:
    """``<run folder>/verdict.json``, written atomically."""
    return atomic_write_json(Path(verdict.run_path) / VERDICT_FILE, verdict.to_dict())


def known_columns() -> set[str]:
    """Columns a gate may name: the turn table's, every registered scorer's, and ``error_rate``."""

    return {*COLUMNS, ERROR_RATE, *(c for cls in available_scorers().values() for c in cls.columns)}


def evaluate_run(
    run: str | Path,
    suite: Suite | str | Path,
    *,
    baseline: str | Path | None = None,
    runs_dir: str | Path | None = None,
    stack: ModelStack | None = None,
    score: bool = True,
    write: bool = True,
    suite_path: str | None = None,
) -> Verdict:
    """Score an existing run for ``suite``'s gates and check them (and the regression vs ``baseline``)."""

    suite_obj, path_of_suite = _suite(suite)
    suite_path = suite_path or path_of_suite
    gates = parse_gates(suite_obj.gates)
    if not gates:
        raise EvalError(f"suite {suite_obj.name!r} defines no gates: add a gates: list (see evals/README.md)")
    run_path = Run.load(run, runs_dir).path
    scored = load_scored(run_path)
    unknown = sorted(gate_columns(gates) - known_columns() - set(scored.rows.columns))
    if unknown:
        raise EvalError(
            f"gate metric(s) {', '.join(map(repr, unknown))} are neither turn-table nor scorer columns "
            f"(known: error_rate, {', '.join(sorted(known_columns() - {ERROR_RATE}))})"
        )
    base_path = None
    if baseline is not None:
        try:
            base_path = Run.load(baseline, runs_dir).path
        except FileNotFoundError as e:
            raise EvalError(f"baseline: {e}") from e
        if base_path.resolve() == run_path.resolve():
            raise EvalError(f"the baseline run is the run being checked ({run_path.name}): give an earlier run")
    scoring: list[dict[str, Any]] = []
    if score:
        scoring += score_for_gates(run_path, gates, stack=stack)
        if base_path is not None:
            scoring += score_for_gates(base_path, [g for g in gates if g.is_regression], stack=stack)
    if scoring:
        scored = load_scored(run_path)
    base_df = load_scored(base_path).rows if base_path is not None else None
    # the baseline is the one given here, not one a previous eval recorded in the manifest
    manifest = {k: v for k, v in scored.manifest.items() if k != "eval"}
    results = evaluate_gates(scored.rows, manifest, suite_obj, baseline=base_df)
    if base_path is not None:  # name the reference by its run id
        results = [_rename_reference(r, base_path.name) for r in results]
    verdict = Verdict(
        suite=suite_obj.name,
        run_id=scored.run_id,
        run_path=run_path,
        results=results,
        baseline_run=str(base_path.resolve()) if base_path is not None else None,
        scoring=scoring,
        suite_path=suite_path,
    )
    if write:
        write_verdict(verdict)
        _record_in_manifest(run_path, verdict)
    return verdict


def _rename_reference(r: GateResult, run_id: str) -> GateResult:
    from dataclasses import replace

    if r.kind == "regression" and r.reference == "baseline run":
        return replace(r, reference=f"baseline run {run_id}")
    return r


def run_eval(
    suite: Suite | str | Path,
    *,
    run: str | Path | None = None,
    baseline: str | Path | None = None,
    run_id: str | None = None,
    runs_dir: str | Path | None = None,
    stack: ModelStack | None = None,
    progress: bool = False,
) -> Verdict:
    """Run ``suite`` (or reuse ``run``), score it, check its gates, write ``verdict.json``; see :class:`Verdict`.

    One model stack serves the run and the scorers (the embedder loads once); it is closed at the end
    unless the caller passed it in.
    """
    from workbench.workflows.faults import run_faults  # it imports this module (evaluate_run)

    runs_dir = resolve_runs_dir(runs_dir)
    suite_obj, suite_path = _suite(suite)
    if not suite_obj.gates:
        raise EvalError(f"suite {suite_obj.name!r} defines no gates: add a gates: list (see evals/README.md)")
    if baseline is not None:
        try:
            Run.load(baseline, runs_dir)  # fail before spending minutes on the run
        except FileNotFoundError as e:
            raise EvalError(f"baseline: {e}") from e
    if run is None and isinstance(suite_obj, FaultSuite):  # its own scripted endpoints and fake speech
        faults = run_faults(
            suite_obj, baseline=baseline, run_id=run_id, runs_dir=runs_dir, progress=progress, suite_path=suite_path
        )
        assert faults.verdict is not None  # the suite has gates
        return faults.verdict
    own = stack is None
    stack = stack or ModelStack(suite_obj.workbench_config())
    try:
        if run is None:
            result = replay_run(suite_obj, run_id=run_id, runs_dir=runs_dir, stack=stack, progress=progress)
            run = result.path
        else:
            status = Run.load(run, runs_dir).status
            if status not in (None, "complete"):
                raise EvalError(f"run {run} is {status!r}, not complete: finish it with `workbench run --resume` first")
        return evaluate_run(run, suite_obj, baseline=baseline, runs_dir=runs_dir, stack=stack, suite_path=suite_path)
    finally:
        if own:
            stack.close()


__all__ = ["VERDICT_FILE", "EvalError", "Verdict", "evaluate_run", "run_eval", "scorers_for", "write_verdict"]
