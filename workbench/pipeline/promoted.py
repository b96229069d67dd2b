"""``worker/promoted.yaml``: what the production worker serves, and the evidence it was chosen on.

The file's format lives beside the pipeline because the worker reads it and nothing else of the
workbench's workflows: ``workbench promote`` (:mod:`workbench.workflows.promote`) writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from workbench.core.io import atomic_write_text
from workbench.pipeline.agents import AgentFactory

PROMOTED_PATH = Path("worker/promoted.yaml")
"""Default place of the promoted file (relative to the working directory, like ``runs/``)."""
PROMOTED_FORMAT = 1


class AgentSpec(BaseModel):
    """How the worker builds its agent: the run's instructions or agent factory, and the text clean-up before TTS."""

    model_config = ConfigDict(extra="forbid")

    instructions: str | None = None  # None: workbench.pipeline.DEFAULT_INSTRUCTIONS (without a factory)
    # the suite's `agent:` as written (a file path relative to the working directory): the worker calls it
    # (workbench.pipeline.agents) for each call's Agent; None: the default agent with `instructions`
    factory: AgentFactory | None = None
    speech_text: dict[str, Any] | None = None  # SpeechTextConfig fields; None: its defaults
    greeting: str | None = None  # spoken when a caller joins (not part of any measured turn)

    @model_validator(mode="after")
    def _one_source_of_instructions(self) -> AgentSpec:
        if self.factory is not None and self.instructions is not None:
            raise ValueError("give 'instructions' or 'factory', not both: the factory's agent has its own instructions")
        return self


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
