"""A suite: which dataset, which strategies, which mode, how many repetitions, how concurrently.

Written as YAML (``evals/*.yaml``, ``workbench run SUITE.yaml``) or built in Python. A fault suite
(``kind: faults``) is a :class:`Suite` too, with the fields that say which faults to inject.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workbench.analysis.gates import parse_gates
from workbench.core.config import WorkbenchConfig, load_config, validation_text
from workbench.pipeline.agents import AgentFactory, AgentFactoryError, load_agent_factory
from workbench.scoring.faults import ALL_FAULTS


class Selection(BaseModel):
    """Which conversations to replay: explicit ids, tags, or the first ``limit``."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = None
    tags: list[str] | None = None
    limit: int | None = None


class VoiceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variants: list[str] = Field(default_factory=lambda: ["piper"])  # recording variants to play
    realtime: bool = True  # False: functional checks only; rows carry no latency figures
    concurrency: int = 1  # real-time sessions at once (CPU-heavy local models distort each other)
    conversations: Selection | None = None  # voice mode's own selection (from the whole dataset); None: the suite's
    turn_timeout_s: float = 60.0


class ExecutorOptions(BaseModel):
    """Where a run's jobs (strategy x mode x voice x conversation x repetition) run: ``inprocess`` (the default,
    in the runner's own process) or ``ray`` (on Ray actors, one per slot, each with its own model stack)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["inprocess", "ray"] = "inprocess"
    address: str | None = None  # ray: a running cluster ("auto", "HOST:PORT"); None: start Ray locally
    slots: int = Field(2, ge=1)  # ray: actors, each with its own model stack
    cpus_per_slot: float = Field(1.0, gt=0)  # ray: CPUs each slot reserves, so real-time sessions are not starved
    placement_timeout_s: float = Field(120.0, gt=0)  # ray: a slot no node has room for is dropped after this
    check_timeout_s: float = Field(300.0, gt=0)  # ray: a slot's start-up, checks and warm-up must end within it
    max_slot_restarts: int = Field(3, ge=0)  # ray: slots that die are replaced this many times a run


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "suite"
    dataset: Path = Path("datasets/dianachat_demo")
    strategies: dict[str, str | dict[str, Any]] = Field(default_factory=lambda: {"plain": "plain"})
    imports: list[str] = Field(default_factory=list)  # modules that register your own strategies (importable names)
    mode: Literal["text", "voice", "both"] = "text"
    repetitions: int = 1
    concurrency: int | None = None  # None: 1 on a local single-slot server (honest latency), else 8
    conversations: Selection = Field(default_factory=Selection)
    voice: VoiceOptions = Field(default_factory=VoiceOptions)
    instructions: str | None = None  # the agent's instructions; None: the workbench default
    # your own agent (workbench.pipeline.agents): "module:function", "path/to/file.py:function" (relative to the
    # suite file) or {use: ..., <keyword args>}; it has its own instructions, so not with `instructions`
    agent: AgentFactory | None = None
    speech_text: dict[str, Any] | None = None  # text clean-up before TTS (pipeline.SpeechTextConfig); None: defaults
    config: Path | None = None  # workbench config (endpoints, models); None: defaults + environment
    # the config's sections this suite replaces, e.g. stt: {use: "livekit.plugins.deepgram:STT", model: nova-3}
    # or llm: {use: "livekit.plugins.anthropic:LLM", model: claude-haiku-4-5, api_key_env: ANTHROPIC_API_KEY}
    components: dict[Literal["llm", "stt", "tts", "vad", "turn"], dict[str, Any]] = Field(default_factory=dict)
    turn_timeout_s: float = 60.0
    gates: list[dict[str, Any]] = Field(default_factory=list)  # `workbench eval` (workbench.analysis.gates.Gate)
    baseline: str = "plain"
    executor: ExecutorOptions = Field(default_factory=ExecutorOptions)  # where jobs run; not part of the results

    @field_validator("gates")
    @classmethod
    def _valid_gates(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        parse_gates(v)  # a bad gate fails when the suite loads, naming it; the dicts stay as written
        return v

    @field_validator("components")
    @classmethod
    def _valid_components(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        try:
            WorkbenchConfig.model_validate(v)  # a bad section fails when the suite loads, naming its field
        except ValidationError as e:
            raise ValueError(validation_text(e)) from e
        return v

    def workbench_config(self) -> WorkbenchConfig:
        """The config this suite runs on: its ``config`` file (or the defaults and environment), with the
        suite's ``components`` replacing those sections whole."""
        base = load_config(self.config)
        if not self.components:
            return base
        return WorkbenchConfig.model_validate({**base.model_dump(), **self.components})

    @model_validator(mode="after")
    def _one_source_of_instructions(self) -> Suite:
        if self.agent is not None and self.instructions is not None:
            raise ValueError(
                "`instructions` and `agent` together: the agent factory's Agent has its own instructions "
                "(drop `instructions`, or pass them to the factory as a keyword argument)"
            )
        return self

    @field_validator("strategies", mode="before")
    @classmethod
    def _list_to_dict(cls, v: Any) -> Any:
        if isinstance(v, list):  # [plain, rag, {name: x, kind: rag}] -> mapping by name
            out = {}
            for item in v:
                if isinstance(item, str):
                    out[item] = item
                elif isinstance(item, dict) and isinstance(item.get("name") or item.get("kind"), str):
                    out[item.get("name") or item["kind"]] = item
                else:
                    raise ValueError(f"a strategy is a name or a mapping with a kind, got {item!r}")
            return out
        return v

    def strategy_config(self, name: str) -> dict[str, Any]:
        spec = self.strategies[name]
        cfg: dict[str, Any] = {"kind": spec} if isinstance(spec, str) else dict(spec)
        cfg.setdefault("name", name)
        return cfg

    @property
    def modes(self) -> list[str]:
        return ["text", "voice"] if self.mode == "both" else [self.mode]

    def only(self, strategies: list[str] | None = None, conversations: list[str] | None = None) -> Suite:
        """This suite cut down to some of its strategies and to named conversations (both modes): a quick look
        at one case without editing the file. A name the suite does not have is a :class:`SuiteError`."""
        update: dict[str, Any] = {}
        if strategies:
            unknown = [s for s in strategies if s not in self.strategies]
            if unknown:
                have = ", ".join(self.strategies)
                raise SuiteError(f"strategies: {', '.join(unknown)} not in the suite (it has {have})")
            update["strategies"] = {s: self.strategies[s] for s in strategies}
        if conversations:
            update["conversations"] = Selection(ids=list(conversations))
            update["voice"] = self.voice.model_copy(update={"conversations": None})
        return self.model_copy(update=update)


class FaultTiming(BaseModel):
    """How the scripted endpoints answer (seconds). Small numbers: the whole suite runs in seconds."""

    model_config = ConfigDict(extra="forbid")

    ttft_s: float = Field(0.05, ge=0)  # primary endpoint: request to first token (and to an error status)
    gap_s: float = Field(0.01, ge=0)  # between tokens
    after: int = Field(2, ge=0)  # cut / malformed: tokens sent before the fault
    retry_after_s: float = Field(1.0, ge=0)  # http_429's Retry-After header
    trickle_gap_s: float = Field(1.5, gt=0)  # trickle: between tokens (longer than the chunk timeout)
    backup_ttft_s: float = Field(0.05, ge=0)  # the healthy backup endpoint


class FaultSuite(Suite):
    """``kind: faults`` (``evals/faults.yaml``): each fault in ``faults`` x each strategy, run by
    :mod:`workbench.workflows.faults` against a scripted endpoint instead of a real model.

    Each run writes its own dataset (one conversation per fault) into the run folder and sets ``dataset``
    to it; ``mode`` and ``voice`` follow from ``voice_faults`` unless the suite sets them.
    """

    kind: Literal["faults"] = "faults"
    name: str = "faults"
    faults: list[str] = Field(default_factory=lambda: list(ALL_FAULTS))
    voice_faults: list[str] = Field(default_factory=lambda: ["stt_error", "tts_error", "http_500", "cut", "cut_clean"])
    # voice barge-in checks (workbench.scoring.faults.TURN_TAKING): the caller talks over the agent, or noise does
    turn_taking: list[Literal["barge_in", "noise"]] = Field(default_factory=list)
    timing: FaultTiming = Field(default_factory=FaultTiming)
    concurrency: int | None = Field(8, ge=1)  # text sessions at once
    voice_concurrency: int = Field(4, ge=1)  # real-time voice sessions at once (light fake components)
    turn_timeout_s: float = Field(10.0, gt=0)  # a harness bound far above every strategy timeout
    slack_s: float = Field(0.5, ge=0)  # recovery allowance on top of a strategy's own timeouts

    @field_validator("faults", "voice_faults")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [f for f in v if f not in ALL_FAULTS]
        if unknown:
            raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(ALL_FAULTS)}")
        return v

    @model_validator(mode="after")
    def _voice_subset(self) -> FaultSuite:
        extra = [f for f in self.voice_faults if f not in self.faults]
        if extra:
            raise ValueError(f"voice_faults {', '.join(extra)} are not in faults")
        return self


class SuiteError(ValueError):
    """A suite file that cannot be read as YAML (field errors are pydantic ``ValidationError``s)."""


def suite_from_dict(data: Any) -> Suite:
    """A :class:`Suite`, or a :class:`FaultSuite` for ``kind: faults``, from a mapping (YAML, a manifest)."""
    cls = FaultSuite if isinstance(data, dict) and data.get("kind") == "faults" else Suite
    return cls.model_validate(data)


def load_suite(path: str | Path) -> Suite:
    """A suite from YAML; relative dataset/config paths and an ``agent`` file path are resolved against the suite
    file's folder first (when not found from the working directory), and the agent factory is loaded."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise SuiteError(f"{p}: not a YAML suite: {e}") from e
    suite = suite_from_dict(data)
    for attr in ("dataset", "config"):
        val = getattr(suite, attr)
        if val is not None and not val.is_absolute() and not val.exists() and (p.parent / val).exists():
            setattr(suite, attr, p.parent / val)
    if suite.agent is not None:
        if suite.agent.is_file:
            f = Path(suite.agent.target)
            if not f.is_absolute() and not f.exists() and (p.parent / f).exists():
                suite.agent = suite.agent.with_target(str(p.parent / f))
        try:
            load_agent_factory(suite.agent)  # a missing module, file or name fails here; a bad call at run start
        except AgentFactoryError as e:
            raise SuiteError(f"{p}: agent: {e}") from e
    return suite
