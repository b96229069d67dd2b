"""Fault injection: every endpoint and speech fault, for every strategy, replayed as an ordinary run.

A *fault suite* (``evals/faults.yaml``, ``kind: faults``) names faults and strategies. For each fault
it writes a three-turn conversation whose middle turn carries the fault (a marker such as
``fault-http-500`` in the caller's words), serves the strategies from a scripted OpenAI-compatible
endpoint that injects the fault named by that marker (a second, healthy endpoint ``backup`` serves
fallbacks), and replays everything through the normal runner: text mode for all faults, real-time
voice mode with light fake speech components (whose STT and TTS fail on the marker) for the voice
faults. The run folder is an ordinary run (``load_run``, ``workbench report`` work on it), plus
``scores.parquet`` columns ``fault`` and ``fault_ok`` so the suite's ``gates`` hold it in CI.

:func:`fault_table` turns the rows into the fault x strategy x mode table: the error kind recorded,
the fallback used, when the caller heard the turn recover, and whether the next turn went on.

Why scripted: real faults are rare and unrepeatable; scripted ones fire on the exact turn, every
time, in seconds.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workbench.config import EndpointConfig, TurnConfig, WorkbenchConfig
from workbench.models import ModelStack
from workbench.replay.store import RUNS_DIR, RunStore, new_run_id, read_rows
from workbench.replay.suite import Selection, Suite, VoiceOptions
from workbench.testing.scripted_endpoint import FAULTS as ENDPOINT_FAULTS
from workbench.testing.scripted_endpoint import Script, ScriptedEndpoint, last_user_text

SPEECH_FAULTS: tuple[str, ...] = ("stt_error", "tts_error")
ALL_FAULTS: tuple[str, ...] = (*ENDPOINT_FAULTS, *SPEECH_FAULTS)
EXPECTED_KIND: dict[str, str] = {
    "http_500": "http_500",
    "http_429": "http_429",
    "refuse": "connection",  # the server closes the connection before any response
    "hang": "timeout",  # the strategy's first-chunk timeout
    "cut": "stream_cut",
    "malformed": "malformed",
    "trickle": "timeout",  # the strategy's between-chunk timeout
    "stt_error": "stt_error",
    "tts_error": "tts_error",
}
"""The ``error_kind`` a turn row must record for each fault."""
PARTIAL_FAULTS = frozenset({"cut", "malformed", "trickle"})  # some words were spoken before the fault
FAULT_TURN = 1  # the middle turn of each fault conversation: one healthy turn before it, one after
VARIANT = "tone"  # the recording variant name of the generated audio
RATE = 16000
BACKUP_TEXT = "This is the backup line, how can I help?"
_MARKER_RE = re.compile(r"\bfault-([a-z0-9]+(?:-[a-z0-9]+)*)\b")


def marker(fault: str) -> str:
    """The word that names ``fault`` inside a caller's turn (hyphens: markdown and TTS clean-up leave it alone)."""
    return "fault-" + fault.replace("_", "-")


def fault_in(text: str | None) -> str | None:
    """The fault a text's marker names, or None."""
    m = _MARKER_RE.search(text or "")
    if not m:
        return None
    name = m.group(1).replace("-", "_")
    return name if name in ALL_FAULTS else None


# -- the suite --------------------------------------------------------------------------------------
class FaultTiming(BaseModel):
    """How the scripted endpoints answer (seconds). Small numbers: the whole suite runs in seconds."""

    model_config = ConfigDict(extra="forbid")

    ttft_s: float = Field(0.05, ge=0)  # primary endpoint: request to first token (and to an error status)
    gap_s: float = Field(0.01, ge=0)  # between tokens
    after: int = Field(2, ge=0)  # cut / malformed: tokens sent before the fault
    retry_after_s: float = Field(1.0, ge=0)  # http_429's Retry-After header
    trickle_gap_s: float = Field(1.5, gt=0)  # trickle: between tokens (longer than the chunk timeout)
    backup_ttft_s: float = Field(0.05, ge=0)  # the healthy backup endpoint


class FaultSuite(BaseModel):
    """``evals/faults.yaml``: which faults, which strategies, how fast the scripted world answers, the gates."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["faults"] = "faults"
    name: str = "faults"
    faults: list[str] = Field(default_factory=lambda: list(ALL_FAULTS))
    voice_faults: list[str] = Field(default_factory=lambda: ["stt_error", "tts_error", "http_500", "cut"])
    strategies: dict[str, str | dict[str, Any]] = Field(default_factory=lambda: {"plain": "plain"})
    timing: FaultTiming = Field(default_factory=FaultTiming)
    concurrency: int = Field(8, ge=1)  # text sessions at once
    voice_concurrency: int = Field(4, ge=1)  # real-time voice sessions at once (light fake components)
    turn_timeout_s: float = Field(10.0, gt=0)  # a harness bound far above every strategy timeout
    slack_s: float = Field(0.5, ge=0)  # recovery allowance on top of a strategy's own timeouts
    gates: list[dict[str, Any]] = Field(default_factory=list)
    baseline: str = "plain"

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

    @field_validator("strategies", mode="before")
    @classmethod
    def _list_to_dict(cls, v: Any) -> Any:
        if isinstance(v, list):  # the same shorthand as a replay suite: [plain, {name: x, kind: plain}]
            return {(i if isinstance(i, str) else i.get("name") or i["kind"]): i for i in v}
        return v

    def replay_suite(self, dataset: Path) -> Suite:
        """The ordinary replay suite that runs the fault conversations (text: all; voice: ``voice_faults``)."""
        return Suite(
            name=self.name,
            dataset=dataset,
            strategies=self.strategies,
            mode="both" if self.voice_faults else "text",
            concurrency=self.concurrency,
            turn_timeout_s=self.turn_timeout_s,
            voice=VoiceOptions(
                variants=[VARIANT],
                concurrency=self.voice_concurrency,
                conversations=Selection(tags=["voice"]),
                turn_timeout_s=self.turn_timeout_s,
            ),
            gates=self.gates,
            baseline=self.baseline,
        )


def is_fault_suite(spec: str | Path | Mapping[str, Any]) -> bool:
    """True for a fault suite (``kind: faults``): eval runners hand those to :func:`run_faults`."""
    if not isinstance(spec, Mapping):
        try:
            spec = yaml.safe_load(Path(spec).read_text()) or {}
        except (OSError, yaml.YAMLError):
            return False
    return isinstance(spec, Mapping) and spec.get("kind") == "faults"


def load_fault_suite(path: str | Path) -> FaultSuite:
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a fault suite must be a mapping")
    return FaultSuite.model_validate(data)


# -- the scripted world ------------------------------------------------------------------------------
def endpoint_script(timing: FaultTiming) -> Callable[[dict[str, Any]], Script]:
    """The primary endpoint's behaviour: the fault named in the caller's last turn, else a healthy echo."""

    def script(request: dict[str, Any]) -> Script:
        fault = fault_in(last_user_text(request))
        if fault not in ENDPOINT_FAULTS:
            return Script(ttft_s=timing.ttft_s, gap_s=timing.gap_s)
        return Script(
            ttft_s=timing.ttft_s,
            gap_s=timing.gap_s,
            fault=fault,  # type: ignore[arg-type]
            after=timing.after,
            retry_after_s=timing.retry_after_s,
            trickle_gap_s=timing.trickle_gap_s,
        )

    return script


USER_TURNS = (
    "What time do you open on Monday?",
    "Can I book a check-up with Doctor Lee ({marker})?",
    "Thanks, and where do I park?",
)


@dataclass
class FaultDataset:
    root: Path
    tones: dict[float, str]  # recording frequency -> the words it carries (for ToneSTT)


def write_fault_dataset(root: Path, suite: FaultSuite, *, lead_s: float = 0.1, speech_s: float = 0.5,
                        tail_s: float = 0.3) -> FaultDataset:  # fmt: skip
    """One conversation per fault (turn 1 carries it); voice faults get tone recordings with a known end."""
    import soundfile as sf

    from workbench.testing.fakes import tone

    (root / "knowledge").mkdir(parents=True, exist_ok=True)
    (root / "knowledge" / "hours.md").write_text("# Hours\n\nWe are open 8 am to 6 pm, Monday to Friday.\n")
    (root / "audio").mkdir(exist_ok=True)
    tones: dict[float, str] = {}
    lines = []
    for fault in suite.faults:
        voice = fault in suite.voice_faults
        turns = []
        for t, template in enumerate(USER_TURNS):
            user = template.format(marker=marker(fault))
            turn: dict[str, Any] = {"user": user, "reference": "", "contexts": [], "facts": []}
            if voice:
                freq = 300.0 + 40.0 * len(tones)
                tones[freq] = user
                rel = f"audio/{fault}_{t}.wav"
                pcm = np.concatenate(
                    [np.zeros(int(lead_s * RATE)), tone(freq, speech_s, RATE), np.zeros(int(tail_s * RATE))]
                ).astype(np.float32)
                sf.write(root / rel, pcm, RATE, subtype="PCM_16")
                turn["audio"] = {VARIANT: rel}
                turn["audio_meta"] = {VARIANT: {"speech_start_s": lead_s, "speech_end_s": lead_s + speech_s}}
            turns.append(turn)
        tags = ["faults", f"fault:{fault}"] + (["voice"] if voice else [])
        lines.append(json.dumps({"id": f"fault-{fault}", "tags": tags, "turns": turns}))
    (root / "conversations.jsonl").write_text("\n".join(lines) + "\n")
    return FaultDataset(root, tones)


class FaultStack(ModelStack):
    """The model stack of a fault run: scripted endpoints, and light fake speech components (new ones per
    session) whose STT fails on turns that say ``fault-stt-error`` and whose TTS fails on answers that do."""

    def __init__(self, config: WorkbenchConfig, tones: Mapping[float, str], *, stt_delay_s: float = 0.05,
                 tts_ttfb_s: float = 0.05, vad_silence_s: float = 0.2) -> None:  # fmt: skip
        super().__init__(config)
        self.tones = dict(tones)
        self.stt_delay_s, self.tts_ttfb_s, self.vad_silence_s = stt_delay_s, tts_ttfb_s, vad_silence_s

    def stt(self) -> Any:
        from workbench.testing.fakes import FailingSTT

        stt_marker = marker("stt_error")
        return FailingSTT(self.stt_delay_s, tones=self.tones, fail_if=lambda text: stt_marker in text)

    def tts(self, kind: str | None = None) -> Any:
        from workbench.testing.fakes import FailingTTS

        tts_marker = marker("tts_error")
        return FailingTTS(self.tts_ttfb_s, fail_if=lambda text: tts_marker in text)

    def vad(self) -> Any:
        from workbench.testing.fakes import EnergyVAD

        return EnergyVAD(silence_s=self.vad_silence_s)


def fault_config(primary_url: str, backup_url: str, state_dir: Path) -> WorkbenchConfig:
    """Endpoints ``default`` (faulty) and ``backup`` (healthy); VAD end of turn with a short delay."""
    return WorkbenchConfig(
        llm=EndpointConfig(kind="openai", base_url=primary_url, model="scripted-primary", timeout_s=10.0),
        endpoints={"backup": EndpointConfig(kind="openai", base_url=backup_url, model="scripted-backup")},
        turn=TurnConfig(mode="vad", min_endpointing_delay=0.1, max_endpointing_delay=1.0),
        state_dir=state_dir,
    )


# -- running ------------------------------------------------------------------------------------------
@dataclass
class FaultRun:
    run_id: str
    path: Path
    table: pd.DataFrame  # fault_table() of the run
    gates: list[Any]  # GateResult for every gate of the suite

    @property
    def passed(self) -> bool:
        return bool(self.table["passed"].all()) and not any(g.failed for g in self.gates)


async def arun_faults(
    suite: FaultSuite | str | Path | None = None,
    *,
    runs_dir: Path = RUNS_DIR,
    run_id: str | None = None,
    progress: bool = False,
) -> FaultRun:
    """Run a fault suite end to end (scripted endpoints in their own threads) and tabulate the outcome."""
    from workbench.replay.runner import arun

    spec = suite if isinstance(suite, FaultSuite) else load_fault_suite(suite) if suite else FaultSuite()
    run_id = run_id or new_run_id(spec.name)
    path = Path(runs_dir) / run_id
    data = write_fault_dataset(path / "dataset", spec)
    if spec.voice_faults:  # imports the voice path makes on first use, done now rather than inside a timed turn
        for module in ("workbench.models.speech", "workbench.replay.audio"):
            importlib.import_module(module)
    with (
        ScriptedEndpoint(endpoint_script(spec.timing), model="scripted-primary") as primary,
        ScriptedEndpoint(Script(text=BACKUP_TEXT, ttft_s=spec.timing.backup_ttft_s), model="scripted-backup") as backup,
    ):
        stack = FaultStack(fault_config(primary.base_url, backup.base_url, path / "state"), data.tones)
        try:
            await arun(spec.replay_suite(data.root), run_id=run_id, runs_dir=runs_dir, stack=stack, progress=progress)
        finally:
            stack.close()
    return finish_fault_run(path, spec)


def run_faults(suite: FaultSuite | str | Path | None = None, **kwargs: Any) -> FaultRun:
    """Synchronous :func:`arun_faults`."""
    return asyncio.run(arun_faults(suite, **kwargs))


def finish_fault_run(path: Path, suite: FaultSuite) -> FaultRun:
    """Score a finished fault run (``fault``, ``fault_ok`` into scores.parquet), record the suite, check gates."""
    from workbench.analysis.gates import evaluate_gates
    from workbench.scoring.persist import load_scored, write_scores

    df = read_rows(path)
    strategies = {n: suite.replay_suite(path).strategy_config(n) for n in suite.strategies}
    scored = fault_scores(df, strategies, suite.slack_s)
    outcome = {"name": "faults", "status": "ok", "columns": ["fault", "fault_ok"],
               "detail": "fault handled as expected (workbench.replay.faults)"}  # fmt: skip
    write_scores(path, scored, {"scorers": [outcome]})
    store = RunStore(path)
    try:
        store.update_manifest(faults=suite.model_dump(mode="json"))
        manifest = store.read_manifest()
    finally:
        store.close()
    gates = evaluate_gates(load_scored(path).df, manifest, manifest["suite"])
    return FaultRun(path.name, path, fault_table(df, strategies, suite.slack_s), gates)


# -- the table ----------------------------------------------------------------------------------------
def _fault_of(tags: Any) -> str | None:
    for t in list(tags) if tags is not None and not isinstance(tags, str) else []:
        if isinstance(t, str) and t.startswith("fault:"):
            return t.split(":", 1)[1]
    return None


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _text(v: Any) -> str:
    return "" if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else str(v)


def _budget(strategy_cfg: Mapping[str, Any] | None, slack_s: float) -> float | None:
    """Latest a recovery may be heard: the strategy gives up after its first-chunk (or between-chunk) timeout."""
    if strategy_cfg is None:
        return None
    from workbench.strategies.base import StrategyOptions

    fields = {k: v for k, v in strategy_cfg.items() if k in StrategyOptions.model_fields}
    opts = StrategyOptions.model_validate(fields)
    return opts.first_chunk_timeout_s + opts.chunk_timeout_s + slack_s


def _outcome(fault: str, row: Mapping[str, Any]) -> str:
    kind, fb = _text(row.get("error_kind")), _text(row.get("fallback"))
    if not kind:
        return "no fault seen"
    if fb and fb != "apology":
        return f"fallback {fb}" + (" after partial" if row.get("partial") is True else "")
    if fb == "apology":
        return "apology" + (" after partial" if row.get("partial") is True else "")
    if kind == "stt_error":
        return "no reply (not heard)"
    if kind == "tts_error":
        return "silent reply"
    return "failed"


def _judge(fault: str, mode: str, rows: pd.DataFrame, budget: float | None) -> dict[str, Any]:
    """One conversation's verdict: the fault turn recorded as expected, recovered in time, the rest intact."""
    by_turn = {int(r["turn_index"]): r for r in rows.to_dict("records")}
    fault_row = by_turn.get(FAULT_TURN, {})
    applies = fault in ENDPOINT_FAULTS or mode == "voice"
    kind = _text(fault_row.get("error_kind"))
    fallback = _text(fault_row.get("fallback"))
    heard = _num(fault_row.get("v2v_s" if mode == "voice" else "llm_ttfc_s"))
    recovery = _num(fault_row.get("recovery_s"))
    problems = []
    if len(by_turn) != len(USER_TURNS):
        problems.append(f"{len(by_turn)} of {len(USER_TURNS)} turn rows stored")
    for t, r in by_turn.items():
        healthy_turn = t != FAULT_TURN or not applies
        if healthy_turn and (_text(r.get("error_kind")) or not _text(r.get("answer"))):
            problems.append(f"turn {t} failed ({_text(r.get('error_kind')) or 'empty answer'})")
    if applies:
        if kind != EXPECTED_KIND[fault]:
            problems.append(f"error_kind {kind or 'none'}, expected {EXPECTED_KIND[fault]}")
        if fault in ENDPOINT_FAULTS:
            if not fallback:
                problems.append("no fallback or apology")
            if (fault in PARTIAL_FAULTS) != (fault_row.get("partial") is True):
                problems.append(f"partial={fault_row.get('partial')}")
            if fault_row.get("realtime") is not False and budget is not None:
                if recovery is None:
                    problems.append("no recovery time recorded")
                elif recovery > budget:
                    problems.append(f"recovered after {recovery:.2f} s > {budget:.2f} s")
            if not _text(fault_row.get("answer")):
                problems.append("the caller heard nothing")
    return {
        "outcome": _outcome(fault, fault_row) if applies else "control (fault needs voice)",
        "error_kind": kind or None,
        "fallback": fallback or None,
        "partial": bool(fault_row.get("partial") is True),
        "heard_s": heard,
        "recovery_s": recovery,
        "budget_s": budget if applies and fault in ENDPOINT_FAULTS else None,
        "next_turn_ok": not any(p.startswith(f"turn {FAULT_TURN + 1} ") for p in problems),
        "passed": not problems,
        "problems": "; ".join(problems),
    }


def fault_table(
    df: pd.DataFrame, strategies: Mapping[str, Mapping[str, Any]] | None = None, slack_s: float = 0.5
) -> pd.DataFrame:
    """Fault x strategy x mode: what the turn recorded and whether the fault was handled.

    ``df`` is a run's turn table (``load_run``); fault conversations are found by their ``fault:NAME``
    tag, other rows are ignored, so this works on any run that contains them. Columns: ``error_kind``
    and ``fallback`` recorded at the fault turn, ``outcome`` in words, ``heard_s`` (what the caller
    waited for the first words: ``llm_ttfc_s`` in text, ``v2v_s`` in voice), ``recovery_s`` (request to
    the first words of the fallback or apology), ``budget_s`` (the strategy's first-chunk + between-chunk
    timeouts + ``slack_s``, from ``strategies``: a suite's strategy configs, e.g. a manifest's
    ``suite.strategies``; without it no time budget is checked), ``next_turn_ok``, ``passed`` and
    ``problems``. Speech faults in text mode are controls: the session never meets them.
    """
    cols = ["fault", "strategy", "mode", "expected", "outcome", "error_kind", "fallback", "partial", "heard_s",
            "recovery_s", "budget_s", "next_turn_ok", "passed", "problems"]  # fmt: skip
    if df is None or df.empty or "tags" not in df.columns:
        return pd.DataFrame(columns=cols)
    d = df.assign(fault=df["tags"].map(_fault_of))
    d = d[d["fault"].notna()]
    out = []
    for (fault, strategy, mode, _voice), rows in d.groupby(["fault", "strategy", "mode", "voice"], sort=False):
        for _, conv_rows in rows.groupby(["conversation_id", "repetition"], sort=False):
            cfg = (strategies or {}).get(strategy)
            if isinstance(cfg, str):
                cfg = {"kind": cfg}
            verdict = _judge(str(fault), str(mode), conv_rows, _budget(cfg, slack_s) if strategies else None)
            out.append({"fault": fault, "strategy": strategy, "mode": mode, "expected": EXPECTED_KIND[fault],
                        **verdict})  # fmt: skip
    table = pd.DataFrame(out, columns=cols)
    order = {f: i for i, f in enumerate(ALL_FAULTS)}
    return table.sort_values(["mode", "fault", "strategy"], key=lambda s: s.map(order) if s.name == "fault" else s,
                             kind="stable").reset_index(drop=True)  # fmt: skip


def fault_scores(
    df: pd.DataFrame, strategies: Mapping[str, Mapping[str, Any]] | None = None, slack_s: float = 0.5
) -> pd.DataFrame:
    """``df`` plus ``fault`` (the conversation's fault) and ``fault_ok`` (1.0 when its conversation passed
    :func:`fault_table`'s checks, NaN outside fault conversations): a gate ``{metric: fault_ok, stat: min,
    min: 1}`` holds every fault x strategy x mode in CI."""
    table = fault_table(df, strategies, slack_s)
    out = df.copy()
    out["fault"] = df["tags"].map(_fault_of) if "tags" in df.columns else None
    ok: dict[tuple[Any, ...], float] = {}
    for r in table.itertuples():
        key = (r.fault, r.strategy, r.mode)
        ok[key] = min(ok.get(key, 1.0), float(r.passed))
    out["fault_ok"] = [ok.get((f, s, m), math.nan) if f else math.nan
                       for f, s, m in zip(out["fault"], out["strategy"], out["mode"], strict=True)]  # fmt: skip
    return out


def run_fault_eval(
    suite: str | Path,
    *,
    baseline: str | Path | None = None,
    run_id: str | None = None,
    runs_dir: Path = RUNS_DIR,
) -> Any:
    """``workbench eval`` / ``pytest evals/`` for a fault suite: run it, then judge its gates like any suite.

    Returns the eval runner's ``Verdict`` (``workbench.analysis.evals``); the gates read ``fault_ok``,
    already stored by the run, so nothing else is scored.
    """
    from workbench.analysis.evals import evaluate_run
    from workbench.replay.store import MANIFEST_FILE

    result = run_faults(suite, runs_dir=runs_dir, run_id=run_id)
    replay = Suite.model_validate(json.loads((result.path / MANIFEST_FILE).read_text())["suite"])
    return evaluate_run(result.path, replay, baseline=baseline, runs_dir=runs_dir, score=False, suite_path=str(suite))
