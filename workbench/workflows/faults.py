"""Fault runs: every endpoint and speech fault of a fault suite, for every strategy, replayed as an ordinary run.

A fault suite (:class:`~workbench.workflows.suite.FaultSuite`, ``kind: faults``, ``evals/faults.yaml``)
names faults and strategies. For each fault a run writes a three-turn conversation whose middle turn
carries the fault (a marker such as ``fault-http-500`` in the caller's words), serves the strategies from
a scripted OpenAI-compatible endpoint that injects the fault named by that marker (a second, healthy
endpoint ``backup`` serves fallbacks), and replays everything through the normal runner: text mode for
all faults, real-time voice mode with light fake speech components (whose STT and TTS fail on the
marker) for the voice faults. The run folder is an ordinary run, scored by the ``faults`` scorer
(``fault``, ``fault_ok``: :mod:`workbench.scoring.faults`) and judged by the suite's gates. The suite's
``turn_taking`` adds voice barge-in conversations the same way: the middle turn starts over the agent's first
reply (``barge_in``: the agent must yield in time; ``noise``: a short burst it must talk through), with
replies made long enough to be talked over.

:func:`arun_faults` is the one way a fault run happens: ``workbench faults``, ``workbench eval`` on a fault
suite and ``pytest evals/`` all call it. :func:`fault_table` turns the rows into the fault x strategy x
mode table: the error kind recorded, the fallback used, when the caller heard the turn recover, and
whether the next turn went on.

Why scripted: real faults are rare and unrepeatable; scripted ones fire on the exact turn, every time,
in seconds.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from workbench.analysis.gates import GateResult
from workbench.core.aio import run_sync
from workbench.core.config import EndpointConfig, TurnConfig, WorkbenchConfig
from workbench.core.io import atomic_file, atomic_write_text
from workbench.core.run import resolve_runs_dir
from workbench.core.store import new_run_id
from workbench.faults.endpoint import Script, ScriptedEndpoint, last_user_text
from workbench.faults.speech import EnergyVAD, FailingSTT, FailingTTS, tone
from workbench.models import ModelStack
from workbench.scoring.faults import (
    ALL_FAULTS,
    ENDPOINT_FAULTS,
    EXPECTED_KIND,
    FAULT_TURN,
    PARTIAL_FAULTS,
    SPEECH_FAULTS,
    TURN_TAKING,
    USER_TURNS,
    FaultScorer,
    fault_in,
    fault_verdicts,
    marker,
    write_answer_key,
)
from workbench.strategies.base import StrategyOptions
from workbench.workflows.eval import Verdict, evaluate_run
from workbench.workflows.runner import arun
from workbench.workflows.runs import Run
from workbench.workflows.suite import FaultSuite, FaultTiming, Selection, VoiceOptions, load_suite

VARIANT = "tone"  # the recording variant name of the generated audio
RATE = 16000
BACKUP_TEXT = "This is the backup line, how can I help?"
BARGE_IN_S = 0.3  # turn-taking conversations: the middle turn starts this far into the agent's first reply
NOISE_S = 0.2  # the noise burst, well under the 0.5 s the agent needs to hear before it yields
SLOW_WORD_S = 0.15  # TTS seconds a word with turn-taking checks on: a reply long enough to be talked over


def yield_budget(slack_s: float) -> float:
    """The latest the agent may stop after a barge-in's first words: the configured interruption bound + slack."""
    return TurnConfig().min_interruption_duration + slack_s


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


@dataclass
class FaultDataset:
    root: Path
    tones: dict[float, str]  # recording frequency -> the words it carries (for ToneSTT)


def write_fault_dataset(
    root: Path, suite: FaultSuite, *, lead_s: float = 0.1, speech_s: float = 0.5, tail_s: float = 0.3
) -> FaultDataset:
    """One conversation per fault (its middle turn carries it) and the answer key with each strategy's recovery budget;
    voice faults get tone recordings with a known end of speech."""
    (root / "knowledge").mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "knowledge" / "hours.md", "# Hours\n\nWe are open 8 am to 6 pm, Monday to Friday.\n")
    (root / "audio").mkdir(exist_ok=True)
    tones: dict[float, str] = {}
    lines = []
    for fault in [*suite.faults, *suite.turn_taking]:
        voice = fault in suite.voice_faults or fault in TURN_TAKING
        turns = []
        for t, template in enumerate(USER_TURNS):
            user = template.format(marker=marker(fault))
            turn: dict[str, Any] = {"user": user, "reference": "", "contexts": [], "facts": []}
            if fault in TURN_TAKING and t == FAULT_TURN:
                turn["barge_in_s"] = BARGE_IN_S
            if fault == "noise" and t == FAULT_TURN:  # a burst of noise the STT hears as nothing
                turn["user"] = f"Mm-hm ({marker(fault)})"
                turn["expect_yield"] = False
                rel = f"audio/{fault}_{t}.wav"
                burst = 0.3 * np.random.default_rng(7).uniform(-1, 1, int(NOISE_S * RATE))
                pcm = np.concatenate([burst, np.zeros(int(tail_s * RATE))]).astype(np.float32)
                with atomic_file(root / rel) as f:
                    sf.write(f, pcm, RATE, subtype="PCM_16", format="WAV")
                turn["audio"] = {VARIANT: rel}
                turn["audio_meta"] = {VARIANT: {"speech_start_s": 0.0, "speech_end_s": NOISE_S}}
            elif voice:
                freq = 300.0 + 40.0 * len(tones)
                tones[freq] = user
                rel = f"audio/{fault}_{t}.wav"
                pcm = np.concatenate(
                    [np.zeros(int(lead_s * RATE)), tone(freq, speech_s, RATE), np.zeros(int(tail_s * RATE))]
                ).astype(np.float32)
                with atomic_file(root / rel) as f:
                    sf.write(f, pcm, RATE, subtype="PCM_16", format="WAV")
                turn["audio"] = {VARIANT: rel}
                turn["audio_meta"] = {VARIANT: {"speech_start_s": lead_s, "speech_end_s": lead_s + speech_s}}
            turns.append(turn)
        tags = ["faults", f"fault:{fault}"] + (["voice"] if voice else [])
        lines.append(json.dumps({"id": f"fault-{fault}", "tags": tags, "turns": turns}))
    atomic_write_text(root / "conversations.jsonl", "\n".join(lines) + "\n")
    strategies = {n: suite.strategy_config(n) for n in suite.strategies}
    write_answer_key(root, budgets(strategies, suite.slack_s), yield_budget(suite.slack_s))
    return FaultDataset(root, tones)


class FaultStack(ModelStack):
    """The model stack of a fault run: scripted endpoints, and light fake speech components (new ones per
    session) whose STT fails on turns that say ``fault-stt-error`` and whose TTS fails on answers that do."""

    def __init__(
        self,
        config: WorkbenchConfig,
        tones: Mapping[float, str],
        *,
        stt_delay_s: float = 0.05,
        tts_ttfb_s: float = 0.05,
        vad_silence_s: float = 0.2,
        seconds_per_word: float = 0.05,
    ) -> None:
        super().__init__(config)
        self.tones = dict(tones)
        self.stt_delay_s, self.tts_ttfb_s, self.vad_silence_s = stt_delay_s, tts_ttfb_s, vad_silence_s
        self.seconds_per_word = seconds_per_word

    def stt(self) -> Any:
        stt_marker = marker("stt_error")
        return FailingSTT(self.stt_delay_s, tones=self.tones, fail_if=lambda text: stt_marker in text)

    def tts(self, kind: str | None = None) -> Any:
        tts_marker = marker("tts_error")
        return FailingTTS(self.tts_ttfb_s, self.seconds_per_word, fail_if=lambda text: tts_marker in text)

    def vad(self) -> Any:
        return EnergyVAD(silence_s=self.vad_silence_s)


def fault_config(primary_url: str, backup_url: str, state_dir: Path) -> WorkbenchConfig:
    """Endpoints ``default`` (faulty) and ``backup`` (healthy); VAD end of turn with a short delay."""
    return WorkbenchConfig(
        llm=EndpointConfig(kind="openai", base_url=primary_url, model="scripted-primary", timeout_s=10.0),
        endpoints={"backup": EndpointConfig(kind="openai", base_url=backup_url, model="scripted-backup")},
        turn=TurnConfig(mode="vad", min_endpointing_delay=0.1, max_endpointing_delay=1.0),
        state_dir=state_dir,
    )


def budgets(strategies: Mapping[str, str | Mapping[str, Any]], slack_s: float) -> dict[str, float]:
    """The latest a recovery may be heard, per strategy: the longest it waits before giving up (its first-chunk
    plus its between-chunk timeout), plus ``slack_s`` for the fallback or apology to start."""
    out = {}
    for name, cfg in strategies.items():
        spec = {"kind": cfg} if isinstance(cfg, str) else cfg
        opts = StrategyOptions.model_validate({k: v for k, v in spec.items() if k in StrategyOptions.model_fields})
        out[name] = opts.first_chunk_timeout_s + opts.chunk_timeout_s + slack_s
    return out


def run_suite(suite: FaultSuite, dataset: Path) -> FaultSuite:
    """The suite as the runner replays it: the generated dataset, and voice mode for ``voice_faults``."""
    update: dict[str, Any] = {"dataset": dataset}
    if "mode" not in suite.model_fields_set:
        update["mode"] = "both" if suite.voice_faults or suite.turn_taking else "text"
    if "voice" not in suite.model_fields_set:
        update["voice"] = VoiceOptions(
            variants=[VARIANT],
            concurrency=suite.voice_concurrency,
            conversations=Selection(tags=["voice"]),
            turn_timeout_s=suite.turn_timeout_s,
        )
    return suite.model_copy(update=update)


# -- running ------------------------------------------------------------------------------------------
@dataclass
class FaultRun:
    run_id: str
    path: Path
    table: pd.DataFrame  # fault_table() of the run
    verdict: Verdict | None  # the suite's gates (None: it has none); also in the run's verdict.json

    @property
    def gates(self) -> list[GateResult]:
        return self.verdict.results if self.verdict is not None else []

    @property
    def passed(self) -> bool:
        return bool(self.table["passed"].all()) and not any(g.failed for g in self.gates)


def _fault_suite(suite: FaultSuite | str | Path | None) -> FaultSuite:
    spec = FaultSuite() if suite is None else suite if isinstance(suite, FaultSuite) else load_suite(suite)
    if not isinstance(spec, FaultSuite):
        raise ValueError(f"{suite}: not a fault suite (it needs kind: faults)")
    return spec


async def arun_faults(
    suite: FaultSuite | str | Path | None = None,
    *,
    baseline: str | Path | None = None,
    run_id: str | None = None,
    runs_dir: str | Path | None = None,
    progress: bool = False,
    suite_path: str | None = None,
) -> FaultRun:
    """Run a fault suite (default: every fault, strategy ``plain``), score ``fault_ok``, check the gates.

    The scripted endpoints run in their own threads. ``baseline``: a run for the regression gates, as in
    ``workbench eval``. The run goes to ``runs_dir`` (see :func:`~workbench.core.run.resolve_runs_dir`).
    """
    spec = _fault_suite(suite)
    if suite_path is None and isinstance(suite, str | Path):
        suite_path = str(suite)
    runs_dir = resolve_runs_dir(runs_dir)
    run_id = run_id or new_run_id(spec.name)
    path = runs_dir / run_id
    data = write_fault_dataset(path / "dataset", spec)
    if (
        spec.voice_faults or spec.turn_taking
    ):  # imports the voice path makes on first use, done now rather than inside a timed turn
        for module in ("workbench.models.speech", "workbench.replay.audio"):
            importlib.import_module(module)
    with (
        ScriptedEndpoint(endpoint_script(spec.timing), model="scripted-primary") as primary,
        ScriptedEndpoint(Script(text=BACKUP_TEXT, ttft_s=spec.timing.backup_ttft_s), model="scripted-backup") as backup,
    ):
        config = fault_config(primary.base_url, backup.base_url, path / "state")
        word_s = SLOW_WORD_S if spec.turn_taking else 0.05
        stack = FaultStack(config, data.tones, seconds_per_word=word_s)
        try:
            await arun(run_suite(spec, data.root), run_id=run_id, runs_dir=runs_dir, stack=stack, progress=progress)
            run = Run(path).score([FaultScorer.name], stack=stack)  # loads nothing: rows and the answer key
        finally:
            stack.close()
    verdict = None
    if spec.gates:
        verdict = evaluate_run(path, spec, baseline=baseline, runs_dir=runs_dir, suite_path=suite_path)
    table = fault_table(run.rows, {n: spec.strategy_config(n) for n in spec.strategies}, spec.slack_s)
    return FaultRun(run.run_id, path, table, verdict)


def run_faults(suite: FaultSuite | str | Path | None = None, **kwargs: Any) -> FaultRun:
    """:func:`arun_faults` from sync code, also inside a running event loop (Jupyter)."""
    return run_sync(lambda: arun_faults(suite, **kwargs), name="workbench-faults")


# -- the table ----------------------------------------------------------------------------------------
def fault_table(
    df: pd.DataFrame, strategies: Mapping[str, str | Mapping[str, Any]] | None = None, slack_s: float = 0.5
) -> pd.DataFrame:
    """Fault x strategy x mode: what the turn recorded and whether the fault was handled.

    ``df`` is a run's turn table (``Run.load(id).rows``); fault conversations are found by their
    ``fault:NAME`` tag, other rows are ignored, so this works on any run that contains them. Columns:
    ``error_kind`` and ``fallback`` recorded at the fault turn, ``outcome`` in words, ``heard_s`` (what
    the caller waited for the first words: ``llm_ttfc_s`` in text, ``v2v_s`` in voice), ``recovery_s``
    (request to the first words of the fallback or apology), ``budget_s`` (the strategy's first-chunk +
    between-chunk timeouts + ``slack_s``, from ``strategies``: a suite's strategy configs, e.g. a
    manifest's ``suite.strategies``; without it no time budget is checked), ``next_turn_ok``, ``passed``
    and ``problems``. Speech faults in text mode are controls: the session never meets them.
    """
    return fault_verdicts(df, budgets(strategies, slack_s) if strategies else None, yield_budget(slack_s))


__all__ = [
    "ALL_FAULTS",
    "BACKUP_TEXT",
    "ENDPOINT_FAULTS",
    "EXPECTED_KIND",
    "FAULT_TURN",
    "PARTIAL_FAULTS",
    "SPEECH_FAULTS",
    "TURN_TAKING",
    "FaultRun",
    "FaultStack",
    "FaultSuite",
    "FaultTiming",
    "arun_faults",
    "budgets",
    "endpoint_script",
    "fault_config",
    "fault_in",
    "fault_table",
    "marker",
    "run_faults",
    "write_fault_dataset",
]
