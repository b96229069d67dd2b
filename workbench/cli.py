"""The ``workbench`` command line.

Each command imports what it needs when it runs, so ``workbench --help`` and a mistyped option answer
at once instead of after loading LiveKit, pandas and the models.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from workbench.core.config import ConfigError, load_config
from workbench.core.run import resolve_runs_dir

app = typer.Typer(
    help="DianaChat Workbench: compare LLM strategies for LiveKit voice agents on embedded models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
serve_app = typer.Typer(help="Run workbench-managed services in the foreground.", no_args_is_help=True)
app.add_typer(serve_app, name="serve")
console = Console() if sys.stdout.isatty() else Console(width=160)  # CI logs: no wrapped tables

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config (default: $WORKBENCH_CONFIG, else the embedded default)."),
]


def _runs_dir(value: Path | None) -> Path:
    """``--runs-dir`` or the default, resolved once to an absolute path before the command runs."""
    try:
        return resolve_runs_dir(value)
    except ConfigError as e:  # the default comes from the config: a broken one is a usage error, not a traceback
        raise typer.BadParameter(f"config error: {e}") from e


RunsDirOpt = Annotated[
    Path | None,
    typer.Option(
        help="Where run folders are (default: $WORKBENCH_RUNS_DIR, else the config's runs_dir: runs).",
        callback=_runs_dir,
    ),
]


def _config(path: Path | None):
    try:
        return load_config(path)
    except ConfigError as e:
        console.print(f"[red]config error:[/red] {e}")
        raise typer.Exit(2) from e


def plain_number(v: float) -> str:
    """A float as a person writes it, never in scientific notation: whole from 100 up (1240 ms, not 1.24e+03),
    else 3 significant digits (12.3, 0.042); NaN as blank."""
    if v != v:
        return ""
    if abs(v) >= 100:
        return f"{v:.0f}"
    import numpy as np

    return np.format_float_positional(v, precision=3, unique=True, fractional=False, trim="-")


def print_frame(df, title: str | None = None) -> None:
    """A DataFrame as a rich table (floats as :func:`plain_number`, NaN as blank)."""
    table = Table(title=title)
    for col in df.columns:
        table.add_column(str(col), justify="right" if df[col].dtype.kind in "fi" else "left")
    for row in df.itertuples(index=False):
        table.add_row(*(plain_number(v) if isinstance(v, float) else str(v) for v in row))
    console.print(table)


@app.command()
def strategies() -> None:
    """List the registered strategies (built-in and your own) with what each does."""
    from workbench.strategies import available

    table = Table("strategy", "what it does")
    for name, doc in available().items():
        table.add_row(name, doc)
    console.print(table)


def _quiet_known_livekit_warnings() -> None:
    """Drop livekit-agents warnings that the replay harness triggers on purpose, once per session, so a
    run's output shows what matters (our own warnings and errors still print)."""
    known = ("is deprecated", "resume_false_interruption is enabled but audio output does not support pause")

    class _Known(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not any(k in record.getMessage() for k in known)

    logging.getLogger("livekit.agents").addFilter(_Known())


def _names(csv: str | None) -> list[str] | None:
    """``a,b`` from the command line as a list; None when not given."""
    return [n.strip() for n in csv.split(",") if n.strip()] if csv else None


@app.command("run")
def run_suite(
    suite: Annotated[Path | None, typer.Argument(help="Suite YAML (dataset, strategies, mode, repetitions).")] = None,
    resume: Annotated[str | None, typer.Option(help="Finish an interrupted run (its id or folder).")] = None,
    run_id: Annotated[str | None, typer.Option(help="Name the run folder (default: time-name-random).")] = None,
    runs_dir: RunsDirOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    report: Annotated[
        bool, typer.Option("--report", help="Then score offline and write runs/<id>/report.html.")
    ] = False,
    executor: Annotated[
        str | None,
        typer.Option(help="Where jobs run: inprocess or ray (default: the suite's `executor`, else inprocess)."),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (auto, HOST:PORT); default: start Ray locally.")
    ] = None,
    strategies: Annotated[
        str | None, typer.Option(help="Only these of the suite's strategies (comma-separated names).")
    ] = None,
    conversations: Annotated[
        str | None,
        typer.Option(help="Only these conversations (comma-separated ids), in every mode the suite runs."),
    ] = None,
) -> None:
    """Replay a suite's conversations through each strategy; rows land in runs/<run-id>/ as each turn finishes."""
    from rich.markup import escape

    from workbench.analysis.summary import run_summary
    from workbench.core.store import RunLockedError
    from workbench.models import MissingAssetError
    from workbench.workflows import load_run, run
    from workbench.workflows.suite import SuiteError, load_suite

    _quiet_known_livekit_warnings()
    if suite is None and resume is None:
        console.print("[red]give a SUITE.yaml, or --resume RUN_ID[/red]")
        raise typer.Exit(2)
    if executor not in (None, "inprocess", "ray"):
        console.print(f"[red]--executor is inprocess or ray, not {executor}[/red]")
        raise typer.Exit(2)
    if address is not None and executor == "inprocess":
        console.print("[red]--address is for --executor ray[/red]")
        raise typer.Exit(2)
    if (strategies or conversations) and resume is not None:
        console.print("[red]--strategies and --conversations are for a new run: --resume finishes the run's own[/red]")
        raise typer.Exit(2)
    where = {"kind": executor or ("ray" if address else None), "address": address} if executor or address else None
    try:
        if suite is not None and (strategies or conversations):
            suite = load_suite(suite).only(_names(strategies), _names(conversations))  # type: ignore[assignment]
        result = run(suite, resume=resume, run_id=run_id, runs_dir=runs_dir, progress=not quiet, executor=where)
    except (RunLockedError, FileNotFoundError, ConfigError, SuiteError) as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e
    except MissingAssetError as e:  # one line naming every package the configured stack lacks (models.stack)
        console.print(f"[red]{escape(str(e))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from e
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: finished turns are saved; continue with --resume[/yellow]")
        raise typer.Exit(130) from None
    df = load_run(result.path)
    if report:
        from workbench.analysis.report import build_report
        from workbench.scoring.persist import score_run_folder

        with console.status("scoring offline and writing the report..."):
            score_run_folder(result.path, None, None, runs_dir=runs_dir)
            html = build_report(result.path, runs_dir=runs_dir)
        df = load_run(result.path)
    print_frame(run_summary(df), title=f"run {result.run_id}: {len(df)} turns ({result.skipped} reused)")
    console.print(f"rows: {result.path}  (load with workbench.load_run({result.run_id!r}))")
    if report:
        console.print(f"report: {html}")


@app.command()
def doctor(config: ConfigOpt = None) -> None:
    """Load every model, run one tiny real inference each, and report what works.

    Exits non-zero and names the package to install when something is missing.
    """
    from workbench.models import ModelStack
    from workbench.models.doctor import doctor as run_doctor

    loading = console.status("loading models and running one inference each...")
    with loading, ModelStack(_config(config)) as stack:
        checks = run_doctor(stack)
    table = Table(title="DianaChat Workbench doctor")
    for col in ("component", "model", "load", "latency", "status"):
        table.add_column(col)
    for c in checks:
        load = f"{c.load_s:.2f} s" if c.load_s is not None else "-"
        status = "[green]OK[/green]" if c.ok else f"[red]{c.status}[/red]: {c.detail}"
        table.add_row(c.component, c.model, load, c.metric, status)
    console.print(table)
    bad = [c for c in checks if not c.ok]
    if bad:
        console.print(f"[red]{len(bad)} component(s) not working:[/red] " + ", ".join(c.component for c in bad))
        raise typer.Exit(1)


def _serve_until_stopped(server: Any) -> None:
    """Block until Ctrl-C or SIGTERM, then stop the server (its port is free when this returns)."""
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        console.print("stopped")


@serve_app.command("llm")
def serve_llm(
    config: ConfigOpt = None,
    endpoint: Annotated[str, typer.Option(help="Endpoint name from the config ('default' is `llm`).")] = "default",
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default: a free one).")] = None,
) -> None:
    """Serve the local GGUF model as an OpenAI-compatible endpoint until Ctrl-C (restarts it if it dies)."""
    from workbench.models.llm_server import LocalLLMServer

    cfg = _config(config)
    ep = cfg.endpoint(endpoint)
    if ep.kind != "local":
        console.print(f"[red]endpoint {endpoint!r} is kind {ep.kind!r}; only 'local' endpoints are served here[/red]")
        raise typer.Exit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = LocalLLMServer(ep, log_dir=cfg.state_dir / "logs", port=port)
    info = server.start()
    console.print(
        f"serving [bold]{info.model}[/bold] at [bold]{info.base_url}[/bold] (pid {info.pid}); log: {info.log_path}"
    )
    console.print("use it with: base_url=" + info.base_url + f"  model={info.model}  (Ctrl-C to stop)")
    _serve_until_stopped(server)


@serve_app.command("speech")
def serve_speech(
    config: ConfigOpt = None,
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default: a free one).")] = None,
) -> None:
    """Serve the embedded Whisper and Piper behind OpenAI's audio API until Ctrl-C (docs/speech-server.md)."""
    from workbench.core.config import STTConfig, TTSConfig
    from workbench.models.speech_server import SpeechServer

    cfg = _config(config)
    # a section that builds another component (`use:`) has no embedded model to serve: use the default one
    stt = cfg.stt if isinstance(cfg.stt, STTConfig) else STTConfig()
    tts = cfg.tts if isinstance(cfg.tts, TTSConfig) else TTSConfig()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = SpeechServer(stt, tts, log_dir=cfg.state_dir / "logs", port=port)
    info = server.start()
    console.print(
        f"serving [bold]{info.stt_model}[/bold] and [bold]{info.tts_model}[/bold] at [bold]{info.base_url}[/bold]"
        f" (pid {info.pid}); log: {info.log_path}"
    )
    console.print(f"use it with: base_url={info.base_url}  stt model=whisper-1  tts model=tts-1 (Ctrl-C to stop)")
    _serve_until_stopped(server)


@app.command("promote")
def promote_cmd(
    run: Annotated[str, typer.Argument(help="Run id (a folder under --runs-dir) or a run folder.")],
    strategy: Annotated[str, typer.Option("--strategy", "-s", help="Strategy name as configured in the run's suite.")],
    suite: Annotated[
        Path | None, typer.Option(help="Suite YAML whose gates to check (default: the suite stored in the run).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Promote despite failing or missing evidence (recorded in the file).")
    ] = False,
    out: Annotated[Path, typer.Option(help="Promoted file to write.")] = Path("worker/promoted.yaml"),
    runs_dir: RunsDirOpt = None,
) -> None:
    """Check a strategy's gates in a run and write worker/promoted.yaml (strategy config + evidence) for the worker.

    Refuses (exit 1) when a gate fails or the run holds no evidence for it; --force overrides and says so in the file.
    """
    from workbench.analysis.gates import GateSpecError
    from workbench.workflows.promote import PromotionRefused, promote

    def gate_table(gates) -> Table:
        table = Table("gate", "value", "bound", "n", "result", title=f"gates for {strategy}")
        for g in gates:
            value = "-" if g.value is None else f"{g.value:.4g}"
            verdict = "[green]pass[/green]" if g.passed else "[red]fail[/red]"
            if g.missing:
                verdict = "[yellow]no evidence[/yellow]"
            table.add_row(g.name, value, f"{g.op} {g.bound:g}", str(g.n), verdict)
        return table

    try:
        result = promote(run, strategy, suite_path=suite, force=force, out=out, runs_dir=runs_dir)
    except PromotionRefused as e:
        if e.gates:
            console.print(gate_table(e.gates))
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from e
    except (FileNotFoundError, KeyError, GateSpecError) as e:
        console.print(f"[red]{e.args[0] if isinstance(e, KeyError) else e}[/red]")
        raise typer.Exit(2) from e
    if result.gates:
        console.print(gate_table(result.gates))
    if result.forced:
        console.print("[yellow]FORCED: " + "; ".join(result.problems) + "[/yellow]")
    console.print(f"promoted [bold]{strategy}[/bold] from run {result.promoted.evidence['run_id']} -> {result.path}")
    from workbench.worker import version_check, version_mismatch_text

    check = version_check(result.promoted)  # what the worker will check: say it now rather than at deployment
    if not check.recorded:
        console.print(
            "[yellow]note: the run records no package versions, so the worker will refuse this file "
            "without --allow-version-mismatch[/yellow]"
        )
    else:
        console.print(f"measured with {check.measured_text()}")
        if not check.ok:
            console.print(
                f"[yellow]note: {version_mismatch_text(check)}: a worker on this machine needs "
                "--allow-version-mismatch[/yellow]"
            )
    console.print("serve it with: python -m workbench.worker start  (see docs/worker.md)")


@app.command("validate")
def validate_cmd(
    path: Annotated[Path, typer.Argument(help="Dataset folder (knowledge/, conversations.jsonl, audio/).")],
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Skip decoding the audio files.")] = False,
) -> None:
    """Check a dataset: every problem with file, line and field; exits 1 when there is any."""
    from rich.markup import escape

    from workbench.replay.dataset import load_dataset, validate_dataset

    problems = validate_dataset(path, check_audio=not no_audio)
    if not problems:
        ds = load_dataset(path)
        turns = sum(len(c.turns) for c in ds.conversations)
        audio = sum(len(t.audio_variants()) for c in ds.conversations for t in c.turns)
        variants = ", ".join(sorted(ds.variants())) or "none"
        console.print(
            f"[green]OK[/green] {path}: {len(ds.conversations)} conversations, {turns} turns, "
            f"{audio} audio files (variants: {variants})"
        )
        return
    table = Table(title=f"{len(problems)} problem(s) in {path}")
    for col in ("file", "line", "field", "problem"):
        table.add_column(col, overflow="fold")
    for p in problems:
        table.add_row(escape(p.file), str(p.line or ""), escape(p.field or ""), escape(p.message))
    console.print(table)
    raise typer.Exit(1)


@app.command("import-session")
def import_session_cmd(
    report: Annotated[Path, typer.Argument(help="LiveKit session report JSON (SessionReport.to_dict()).")],
    audio: Annotated[Path | None, typer.Option("--audio", help="The session recording (OGG/WAV/...).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Dataset folder to append to.")] = Path("datasets/imported"),
    conversation_id: Annotated[str | None, typer.Option("--id", help="Conversation id (default: the room).")] = None,
    channel: Annotated[
        int | None, typer.Option("--channel", help="User channel of the recording (default 0 if stereo).")
    ] = None,
) -> None:
    """Append a recorded LiveKit session to a dataset as one conversation (user turns + their audio)."""
    from rich.markup import escape

    from workbench.replay.audio import AudioLoadError
    from workbench.replay.importer import SessionImportError, import_session

    try:
        result = import_session(report, audio=audio, out=out, conversation_id=conversation_id, channel=channel)
    except (SessionImportError, AudioLoadError) as e:
        console.print(f"[red]import failed:[/red] {escape(str(e))}")
        raise typer.Exit(2) from e
    conv = result.conversation
    console.print(
        f"appended [bold]{conv.id}[/bold] ({len(conv.turns)} turns, {len(result.audio_files)} audio files) "
        f"to {result.dataset / 'conversations.jsonl'}"
    )
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")


@app.command("score")
def score_cmd(
    run: Annotated[str, typer.Argument(help="Run id (under runs/) or run folder.")],
    judge_endpoint: Annotated[
        str | None, typer.Option(help="Config endpoint that judges (adds ragas LLM metrics and LiveKit judges).")
    ] = None,
    scorers: Annotated[str | None, typer.Option(help="Comma-separated scorers (default: all).")] = None,
    runs_dir: RunsDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Score a run's turns and store the columns beside it (runs/<id>/scores.parquet); re-scoring replaces."""
    from rich.markup import escape

    from workbench.scoring.base import available_scorers
    from workbench.scoring.persist import score_run_folder

    names = [n.strip() for n in scorers.split(",")] if scorers else None
    if names:
        unknown = [n for n in names if n not in available_scorers()]
        if unknown:
            console.print(f"[red]unknown scorer(s): {', '.join(unknown)}[/red]; have: {', '.join(available_scorers())}")
            raise typer.Exit(2)
    _config(config)  # a bad config file fails here, with its name
    try:
        with console.status("scoring..."):
            path, scoring = score_run_folder(run, names, judge_endpoint, config_path=config, runs_dir=runs_dir)
    except (FileNotFoundError, KeyError, ValueError, RuntimeError) as e:
        console.print(f"[red]cannot score:[/red] {escape(str(e))}")
        raise typer.Exit(2) from e
    table = Table(title=f"scores for {path.name}")
    for col in ("scorer", "status", "columns", "seconds", "note"):
        table.add_column(col)
    colour = {"ok": "green", "skipped": "yellow", "failed": "red"}
    for o in scoring["scorers"]:
        c = colour.get(o["status"], "white")
        table.add_row(
            o["name"],
            f"[{c}]{o['status']}[/{c}]",
            ", ".join(o["columns"]) or "-",
            f"{o['seconds']:.1f}",
            escape(o.get("reason") or ""),
        )
    console.print(table)
    if scoring.get("judge"):
        j = scoring["judge"]
        console.print(f"judge {j['model']}: {j['cache_hits']} cached answers, {j['cache_misses']} calls made")
    console.print(f"stored: {path / 'scores.parquet'}")
    if any(o["status"] == "failed" for o in scoring["scorers"]):
        raise typer.Exit(1)


@app.command("report")
def report_cmd(
    run: Annotated[str, typer.Argument(help="Run id (under runs/) or run folder.")],
    vs: Annotated[str | None, typer.Option("--vs", help="Another run to compare with, paired turn by turn.")] = None,
    out: Annotated[Path | None, typer.Option(help="HTML file to write (default: runs/<id>/report.html).")] = None,
    baseline: Annotated[str | None, typer.Option(help="Baseline strategy (default: the suite's, else plain).")] = None,
    objective: Annotated[
        str | None, typer.Option(help="Ranking: QUALITY[@LATENCY[:pNN]][<=BUDGET], e.g. fact_recall@v2v_s:p90<=1.5")
    ] = None,
    pass_threshold: Annotated[float, typer.Option(help="Fact recall a turn needs to pass.")] = 1.0,
    runs_dir: RunsDirOpt = None,
) -> None:
    """Write a self-contained HTML report: leaderboard, latency, quality, paired tests, worst turns with audio."""
    from rich.markup import escape

    from workbench.analysis.report import build_report

    try:
        with console.status("building the report..."):
            path = build_report(
                run,
                vs=vs,
                out=out,
                runs_dir=runs_dir,
                baseline=baseline,
                objective=objective,
                pass_threshold=pass_threshold,
            )
    except (FileNotFoundError, KeyError, ValueError) as e:
        console.print(f"[red]cannot report:[/red] {escape(str(e))}")
        raise typer.Exit(2) from e
    console.print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if vs is not None:
        _warn_stack_differences(run, vs, runs_dir)


def _warn_stack_differences(run: str, vs: str, runs_dir: Path) -> None:
    """The report's version banner, repeated on the terminal: a reader of the console never opens the HTML."""
    import json

    from rich.markup import escape

    from workbench.core.store import MANIFEST_FILE, resolve_run
    from workbench.models.versions import stack_differences

    a, b = (json.loads((resolve_run(r, runs_dir) / MANIFEST_FILE).read_text()) for r in (run, vs))
    diffs = stack_differences(a, b)
    if diffs:
        console.print(f"[yellow]warning: {escape(run)} and {escape(vs)} were measured on different stacks:[/yellow]")
        for d in diffs:
            console.print(f"[yellow]  {escape(d.describe(run, vs))}[/yellow]")


def verdict_table(verdict) -> Table:
    """One row per gate x strategy: value, bound, paired test, result and why (the eval's readable verdict)."""
    from rich.markup import escape

    colour = {"pass": "green", "fail": "red", "error": "red", "skipped": "yellow"}
    word = {"pass": "pass", "fail": "FAIL", "error": "NO EVIDENCE", "skipped": "skipped"}
    table = Table(
        title=f"eval {verdict.suite}: run {verdict.run_id}"
        + (f" vs baseline {Path(verdict.baseline_run).name}" if verdict.baseline_run else "")
    )
    for col in ("gate", "strategy", "value", "bound", "n", "p", "result", "detail"):
        table.add_column(col, overflow="fold", justify="right" if col in ("value", "bound", "n", "p") else "left")
    for r in verdict.results:
        c = colour[r.status]
        bound = "" if r.bound != r.bound else f"{r.op} {r.bound:.4g}"
        table.add_row(
            escape(r.name),
            escape(r.strategy),
            "-" if r.value is None else f"{r.value:.4g}",
            bound,
            str(r.n),
            "" if r.p_value is None else f"{r.p_value:.3g}",
            f"[{c}]{word[r.status]}[/{c}]",
            escape(r.detail) if r.status != "pass" or r.kind == "regression" else "",
        )
    return table


@app.command("eval")
def eval_cmd(
    suite: Annotated[Path, typer.Argument(help="Suite YAML with a gates: list (see evals/README.md).")],
    baseline: Annotated[
        str | None, typer.Option(help="Baseline run (id or folder) for the regression gates, paired turn by turn.")
    ] = None,
    run: Annotated[str | None, typer.Option(help="Check this finished run instead of running the suite.")] = None,
    run_id: Annotated[str | None, typer.Option(help="Name the new run folder (default: time-name-random).")] = None,
    runs_dir: RunsDirOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run a suite (or reuse --run), score it offline, check its gates and regressions; write runs/<id>/verdict.json.

    Exit 0: every gate passed (skipped ones are listed). Exit 1: a bound broke, a regression was found, or a
    required gate had no evidence. Exit 2: the suite, run or baseline cannot be used.
    """
    from pydantic import ValidationError
    from rich.markup import escape

    from workbench.analysis.gates import GateSpecError
    from workbench.core.store import RunLockedError
    from workbench.workflows.eval import VERDICT_FILE, EvalError, run_eval
    from workbench.workflows.suite import SuiteError

    try:
        verdict = run_eval(suite, run=run, baseline=baseline, run_id=run_id, runs_dir=runs_dir, progress=not quiet)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        console.print(f"[red]suite {escape(str(suite))}: {escape(where)}: {escape(msg)}[/red]")
        raise typer.Exit(2) from e
    except (EvalError, GateSpecError, SuiteError, FileNotFoundError, RunLockedError, ConfigError, KeyError) as e:
        console.print(f"[red]cannot eval:[/red] {escape(str(e.args[0] if isinstance(e, KeyError) else e))}")
        raise typer.Exit(2) from e
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: finished turns are saved; check them later with --run[/yellow]")
        raise typer.Exit(130) from None
    console.print(verdict_table(verdict))
    for o in verdict.scoring:
        if o["status"] != "ok":
            console.print(f"[yellow]scorer {o['name']} {o['status']}:[/yellow] {escape(o.get('reason') or '')}")
    counts = verdict.counts()
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    if verdict.passed:
        console.print(f"[green]PASSED[/green] ({summary})")
    else:
        console.print(f"[red]FAILED[/red] ({summary})")
    console.print(f"verdict: {verdict.run_path / VERDICT_FILE}")
    if not verdict.passed:
        raise typer.Exit(1)


@app.command("faults")
def faults_cmd(
    suite: Annotated[Path, typer.Argument(help="Fault suite YAML (kind: faults).")] = Path("evals/faults.yaml"),
    runs_dir: RunsDirOpt = None,
    run_id: Annotated[str | None, typer.Option(help="Name the run folder (default: time-name-random).")] = None,
) -> None:
    """Inject every fault (HTTP 500/429, refused, hang, cut, malformed SSE, trickle, STT, TTS) into every
    strategy on a scripted endpoint and show what the caller got: fault x strategy x mode.

    The same run as `workbench eval` on the fault suite, with the fault table printed beside the gates."""
    from rich.markup import escape

    from workbench.core.run import VERDICT_FILE
    from workbench.workflows.faults import run_faults

    quiet = [logging.getLogger(n) for n in ("livekit.agents", "workbench.strategies.base")]
    levels = [q.level for q in quiet]
    for q in quiet:  # expected failures: the table reports them
        q.setLevel(logging.CRITICAL)
    try:
        result = run_faults(suite, runs_dir=runs_dir, run_id=run_id)
    except (OSError, ValueError) as e:
        console.print(f"[red]cannot run the fault suite:[/red] {escape(str(e))}")
        raise typer.Exit(2) from e
    finally:  # the command may run inside another process (a test, a notebook): leave logging as it was
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    table = result.table
    print_frame(table.drop(columns=["expected", "problems"]), title=f"faults: run {result.run_id}")
    for r in table[~table["passed"]].itertuples():
        console.print(f"[red]FAIL[/red] {r.fault} x {r.strategy} ({r.mode}): {escape(r.problems)}")
    for g in result.gates:
        mark = "[green]pass[/green]" if not g.failed else "[red]fail[/red]"
        console.print(f"gate {escape(g.name)} ({escape(g.strategy)}): {mark} {escape(g.detail)}")
    console.print(f"rows: {result.path}")
    if result.verdict is not None:
        console.print(f"verdict: {result.path / VERDICT_FILE}")
    if not result.passed:
        raise typer.Exit(1)


@app.command("index")
def index_cmd(
    path: Annotated[Path, typer.Argument(help="Folder of Markdown/text documents (.md, .markdown, .txt).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Index folder (default: <state_dir>/indexes/<name>-<hash>).")
    ] = None,
    config: ConfigOpt = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Re-embed every document even if none changed.")] = False,
) -> None:
    """Build or update the persistent hybrid (BM25 + MiniLM) index of a folder.

    Reloads without embedding when nothing changed; re-embeds only edited or added documents.
    """
    import time

    from rich.markup import escape

    from workbench.knowledge import KnowledgeError, open_index
    from workbench.models import MissingAssetError, ModelStack

    t0 = time.perf_counter()
    with ModelStack(_config(config)) as stack:
        try:
            with console.status(f"indexing {escape(str(path))}..."):
                s = open_index(path, stack, rebuild=rebuild, out=out, warm=False).stats
        except (KnowledgeError, MissingAssetError) as e:
            console.print(f"[red]cannot index:[/red] {escape(str(e))}")
            raise typer.Exit(2) from e
    changes = f" (changed: {len(s['changed'])}, removed: {len(s['removed'])})" if s["mode"] == "updated" else ""
    console.print(
        f"{s['mode']}{changes}: {s['documents']} documents, {s['chunks']} chunks, "
        f"{s['embedded']} embedded now, {s['reused']} reused; index {s['build_s']:.2f} s, "
        f"total {time.perf_counter() - t0:.1f} s"
    )
    console.print(f"index: {escape(s['index_dir'])}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
