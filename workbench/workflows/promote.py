"""Promote a strategy that passed its suite's gates into ``worker/promoted.yaml``, evidence attached.

The worker serves exactly what the file names, so the file also says *why*: the run, its dataset,
its git commit, the metrics and every gate result. A strategy without passing evidence is refused;
``--force`` overrides that and the override is written into the file for whoever reads it later.

Gates are checked by :func:`workbench.analysis.gates.evaluate_gates` (the one implementation,
shared with ``workbench eval``), passed in as a parameter (:class:`GateEvaluator`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

# the one gate implementation, shared with `workbench eval` (names re-exported for existing callers)
from workbench.analysis.gates import GateResult, GateSpecError, evaluate_gates
from workbench.analysis.stats import is_error
from workbench.core.io import jsonable
from workbench.models.versions import WORKBENCH_DIST, lookup
from workbench.pipeline import DEFAULT_INSTRUCTIONS, SpeechTextConfig
from workbench.pipeline.agents import AgentFactory
from workbench.pipeline.promoted import (
    PROMOTED_PATH,
    AgentSpec,
    Promoted,
    write_promoted,
)
from workbench.strategies.registry import with_knowledge
from workbench.workflows.runs import Run

if TYPE_CHECKING:
    import pandas as pd


# -- gates -----------------------------------------------------------------------------------------
class GateEvaluator(Protocol):
    """What ``promote`` needs from an eval module: gate results for every strategy in the run."""

    def __call__(
        self, run_df: pd.DataFrame, manifest: Mapping[str, Any], suite: Mapping[str, Any]
    ) -> list[GateResult]: ...


# -- promote --------------------------------------------------------------------------------------
class PromotionRefused(RuntimeError):
    """The evidence is missing or failing; ``problems`` lists each reason (``--force`` overrides)."""

    def __init__(self, message: str, problems: list[str], gates: list[GateResult]) -> None:
        super().__init__(message)
        self.problems, self.gates = problems, gates


@dataclass
class PromoteResult:
    path: Path
    promoted: Promoted
    gates: list[GateResult]
    problems: list[str] = field(default_factory=list)
    forced: bool = False


_SKIP_NUMERIC = {"turn_index", "repetition", "history_dropped", "interruptions"}


def strategy_metrics(df: pd.DataFrame, strategy: str) -> dict[str, Any]:
    """The evidence summary: row counts, error rate, and mean/p50/p90 of every measured numeric column."""
    import pandas as pd

    rows = df[df["strategy"] == strategy] if "strategy" in df.columns else df.iloc[0:0]
    out: dict[str, Any] = {
        "turns": len(rows),
        "conversations": int(rows["conversation_id"].nunique()) if "conversation_id" in rows else 0,
        "repetitions": int(rows["repetition"].nunique()) if "repetition" in rows else 0,
        "modes": sorted(str(m) for m in rows["mode"].dropna().unique()) if "mode" in rows else [],
        "error_rate": round(float(is_error(rows).mean()), 4) if len(rows) else None,
    }
    for col in rows.columns:
        if col in _SKIP_NUMERIC or col == "error_rate":
            continue
        if rows[col].dtype.kind not in "fiu":  # numbers only (booleans, strings and lists are not metrics)
            continue
        values = pd.to_numeric(rows[col], errors="coerce").dropna()
        if values.empty:
            continue
        out[col] = {
            "n": len(values),
            "mean": round(float(values.mean()), 4),
            "p50": round(float(values.quantile(0.5)), 4),
            "p90": round(float(values.quantile(0.9)), 4),
        }
    return out


def _portable(path: Path) -> str:
    """Relative to the working directory when inside it (the repo), so the file works on another checkout."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _git_head() -> str | None:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parents[1],
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def measured_with_from_manifest(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run's stack as recorded in its manifest (never this machine's: what was measured is what ships)."""

    versions, models = manifest.get("versions"), manifest.get("models")
    if not versions and not models:
        return None
    return {
        "workbench": manifest.get("workbench_version") or lookup(versions, WORKBENCH_DIST),
        "packages": dict(versions or {}),
        "models": dict(models) if models else None,
    }


def _default_agent_spec(suite: Mapping[str, Any]) -> AgentSpec:
    """The run's agent: its factory (a file path made portable) or its instructions, and its speech-text settings."""
    speech = SpeechTextConfig.model_validate(suite.get("speech_text") or {}).model_dump()
    if suite.get("agent"):
        factory = AgentFactory.model_validate(suite["agent"])
        if factory.is_file:
            factory = factory.with_target(_portable(Path(factory.target)))
        return AgentSpec(factory=factory, speech_text=speech)
    return AgentSpec(instructions=suite.get("instructions") or DEFAULT_INSTRUCTIONS, speech_text=speech)


def promote(
    run: str | Path,
    strategy: str,
    *,
    suite_path: str | Path | None = None,
    force: bool = False,
    out: str | Path = PROMOTED_PATH,
    runs_dir: Path | None = None,
    evaluate: GateEvaluator = evaluate_gates,
    now: datetime | None = None,
) -> PromoteResult:
    """Check ``strategy``'s gates in ``run`` and write the promoted file; raise :class:`PromotionRefused` if not.

    Gates come from ``suite_path`` when given, else from the suite stored in the run's manifest. The
    strategy's config always comes from the run (what was measured is what ships).
    """
    measured = Run.load(run, runs_dir)
    run_path, manifest = measured.path, measured.manifest
    run_suite: dict[str, Any] = dict(manifest.get("suite") or {})
    configured = dict(run_suite.get("strategies") or {})
    if strategy not in configured:
        have = ", ".join(configured) or "none"
        raise KeyError(f"strategy {strategy!r} is not in run {manifest.get('run_id', run_path.name)} (it has: {have})")
    if suite_path is not None:
        gate_suite = yaml.safe_load(Path(suite_path).read_text()) or {}
        if not isinstance(gate_suite, dict):
            raise GateSpecError(f"{suite_path}: a suite must be a mapping")
        gates_source = _portable(Path(suite_path))
    else:
        gate_suite, gates_source = run_suite, "run manifest"
    gate_suite = {**gate_suite, "strategies": {strategy: configured[strategy]}}

    df = measured.rows
    gates = [g for g in evaluate(df, manifest, gate_suite) if g.strategy == strategy]

    problems: list[str] = []
    status = manifest.get("status")
    if status not in (None, "complete"):
        problems.append(f"run {manifest.get('run_id')} is {status!r}, not complete: finish it with --resume first")
    n_rows = int((df["strategy"] == strategy).sum()) if "strategy" in df.columns else 0
    if n_rows == 0:
        problems.append(f"no evidence: the run has no turn rows for {strategy!r}")
    if not gates:
        problems.append(f"no gates: the suite ({gates_source}) defines no gates, so nothing shows {strategy!r} is good")
    problems += [f"{g.name}: {g.detail}" for g in gates if g.missing]
    problems += [f"{g.name} failed: {g.detail}" for g in gates if not g.passed and not g.missing]
    if problems and not force:
        raise PromotionRefused(
            f"refusing to promote {strategy!r} from run {manifest.get('run_id', run_path.name)}: "
            + "; ".join(problems)
            + " (use --force to override; the override is recorded)",
            problems,
            gates,
        )

    dataset = manifest.get("dataset") or run_suite.get("dataset")
    cfg = dict(configured[strategy]) if isinstance(configured[strategy], dict) else {"kind": configured[strategy]}
    cfg.setdefault("name", strategy)
    if dataset:
        cfg = with_knowledge(cfg, _portable(Path(dataset) / "knowledge"))
    stamp = (now or datetime.now(UTC)).isoformat()
    evidence = {
        "run_id": manifest.get("run_id", run_path.name),
        "run_path": _portable(run_path),
        "run_status": status,
        "run_created_at": manifest.get("created_at"),
        "dataset": _portable(Path(dataset)) if dataset else None,
        "git_commit": manifest.get("git_commit"),
        "git_dirty": manifest.get("git_dirty"),
        "promoted_at": stamp,
        "promoted_git_commit": _git_head(),
        "promoted_by": os.environ.get("USER") or None,
        "suite": {
            "name": run_suite.get("name"),
            "gates_from": gates_source,
            "gates": jsonable(list(gate_suite.get("gates") or [])),
        },
        "versions": manifest.get("versions"),
        "machine": manifest.get("machine"),
        "metrics": strategy_metrics(df, strategy),
        "gates": [{**asdict(g), "value": None if g.value is None else round(g.value, 6)} for g in gates],
        "passed": not problems,
        "forced": bool(force and problems),
        "problems": problems,
    }
    promoted = Promoted(
        strategy=jsonable(cfg),
        agent=_default_agent_spec(run_suite),
        config=manifest.get("workbench_config"),
        measured_with=jsonable(measured_with_from_manifest(manifest)),
        evidence=jsonable(evidence),
    )
    path = Path(out)
    write_promoted(promoted, path)
    return PromoteResult(path, promoted, gates, problems, forced=evidence["forced"])
