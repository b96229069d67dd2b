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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# the one gate implementation, shared with `workbench eval` (names re-exported for existing callers)
from workbench.analysis.gates import GateResult as GateResult
from workbench.analysis.gates import GateSpec as GateSpec
from workbench.analysis.gates import GateSpecError as GateSpecError
from workbench.analysis.gates import check_gate as check_gate
from workbench.analysis.gates import evaluate_gates as evaluate_gates
from workbench.analysis.gates import parse_gates as parse_gates
from workbench.analysis.stats import is_error as _is_error
from workbench.core.io import atomic_write_text, jsonable
from workbench.core.run import Run

if TYPE_CHECKING:
    import pandas as pd

PROMOTED_PATH = Path("worker/promoted.yaml")
"""Default place of the promoted file (relative to the working directory, like ``runs/``)."""
PROMOTED_FORMAT = 1


# -- gates -----------------------------------------------------------------------------------------
class GateEvaluator(Protocol):
    """What ``promote`` needs from an eval module: gate results for every strategy in the run."""

    def __call__(
        self, run_df: pd.DataFrame, manifest: Mapping[str, Any], suite: Mapping[str, Any]
    ) -> list[GateResult]: ...


# -- the promoted file ----------------------------------------------------------------------------
class AgentSpec(BaseModel):
    """How the worker builds its agent: the run's instructions and the text clean-up before TTS."""

    model_config = ConfigDict(extra="forbid")

    instructions: str | None = None  # None: workbench.pipeline.DEFAULT_INSTRUCTIONS
    speech_text: dict[str, Any] | None = None  # SpeechTextConfig fields; None: its defaults
    greeting: str | None = None  # spoken when a caller joins (not part of any measured turn)


class Promoted(BaseModel):
    """``worker/promoted.yaml``: what the production worker serves, and the evidence for it."""

    model_config = ConfigDict(extra="forbid")

    format: int = PROMOTED_FORMAT
    strategy: dict[str, Any]  # workbench.strategies.build(...) input: kind, name, options
    agent: AgentSpec = Field(default_factory=AgentSpec)
    config: dict[str, Any] | None = None  # the run's workbench config (endpoints, models); key names only
    # what the run was measured with: {workbench, packages: {name: version}, models: {role: {file, sha256}}};
    # the worker refuses another livekit-agents or openai. None: an older file (see measured_packages)
    measured_with: dict[str, Any] | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_kind(self) -> Promoted:
        if not self.strategy.get("kind"):
            raise ValueError("strategy needs a 'kind'")
        return self

    @property
    def strategy_name(self) -> str:
        return str(self.strategy.get("name") or self.strategy["kind"])

    def measured_packages(self) -> dict[str, Any] | None:
        """Package versions the strategy was measured with; a file older than ``measured_with`` falls back to
        ``evidence.versions`` (the run's versions, copied since the first format); ``None`` if neither has any."""
        packages = (self.measured_with or {}).get("packages") or self.evidence.get("versions")
        return dict(packages) if isinstance(packages, Mapping) and packages else None

    def measured_models(self) -> dict[str, Any] | None:
        """Model file hashes the strategy was measured with (``None``: not recorded)."""
        models = (self.measured_with or {}).get("models")
        return dict(models) if isinstance(models, Mapping) and models else None


class PromotedFileError(ValueError):
    """The promoted file is missing or unusable; the message says what to do."""


def load_promoted(path: str | Path = PROMOTED_PATH) -> Promoted:
    p = Path(path)
    if not p.exists():
        raise PromotedFileError(
            f"no promoted strategy at {p}: run `workbench promote RUN --strategy NAME` first "
            "(or point WORKBENCH_PROMOTED at a promoted file)"
        )
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise PromotedFileError(f"{p}: cannot read: {e}") from e
    if not isinstance(data, dict):
        raise PromotedFileError(f"{p}: expected a mapping with 'strategy', got {type(data).__name__}")
    if data.get("format", PROMOTED_FORMAT) != PROMOTED_FORMAT:
        raise PromotedFileError(f"{p}: format {data.get('format')} is not supported (expected {PROMOTED_FORMAT})")
    try:
        return Promoted.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        raise PromotedFileError(f"{p}: {'.'.join(str(x) for x in first['loc'])}: {first['msg']}") from e


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
        "error_rate": round(float(_is_error(rows).mean()), 4) if len(rows) else None,
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
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def measured_with_from_manifest(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run's stack as recorded in its manifest (never this machine's: what was measured is what ships)."""
    from workbench.versions import WORKBENCH_DIST, lookup

    versions, models = manifest.get("versions"), manifest.get("models")
    if not versions and not models:
        return None
    return {
        "workbench": manifest.get("workbench_version") or lookup(versions, WORKBENCH_DIST),
        "packages": dict(versions or {}),
        "models": dict(models) if models else None,
    }


def _default_agent_spec(suite: Mapping[str, Any]) -> AgentSpec:
    from workbench.pipeline import DEFAULT_INSTRUCTIONS, SpeechTextConfig

    speech = suite.get("speech_text")
    return AgentSpec(
        instructions=suite.get("instructions") or DEFAULT_INSTRUCTIONS,
        speech_text=SpeechTextConfig.model_validate(speech or {}).model_dump(),
    )


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
        from workbench.replay.runner import with_knowledge  # the runner's own rule, so the worker retrieves the same

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


def write_promoted(promoted: Promoted, path: Path) -> None:
    """Atomic write (a crash leaves the old file or the new one), with a header saying what it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ev = promoted.evidence
    header = (
        "# Promoted by `workbench promote`; served by `python -m workbench.worker start`.\n"
        f"# strategy {promoted.strategy_name!r} from run {ev.get('run_id')}"
        + (" -- FORCED despite failing or missing evidence (see evidence.problems)" if ev.get("forced") else "")
        + "\n"
    )
    body = yaml.safe_dump(promoted.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=110)
    atomic_write_text(path, header + body)
