"""The production LiveKit worker: serves the promoted strategy with the same factories the harness measured.

``python -m workbench.worker start`` registers with a LiveKit server (Cloud or self-hosted; needs
``LIVEKIT_URL``, ``LIVEKIT_API_KEY``, ``LIVEKIT_API_SECRET``) and answers every room it is dispatched
to. Each job process loads the models once in :func:`prewarm` (VAD, STT, TTS, the LLM endpoint),
then every call builds its session with :func:`session_from_promoted`, which the tests and the
replay harness call too. ``worker/promoted.yaml`` (or ``$WORKBENCH_PROMOTED``) says which strategy.

Heavy imports (livekit, the models) happen inside functions, so a misconfigured start fails in a
fraction of a second with one line instead of a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from workbench.pipeline.promoted import PROMOTED_PATH, Promoted, PromotedFileError, load_promoted

if TYPE_CHECKING:
    from livekit.agents import Agent, AgentServer, AgentSession, JobContext, JobProcess

    from workbench.core.config import WorkbenchConfig
    from workbench.models import ModelStack
    from workbench.models.versions import VersionCheck

log = logging.getLogger("workbench.worker")

PROMOTED_ENV = "WORKBENCH_PROMOTED"
CREDENTIALS = {"LIVEKIT_URL": "--url", "LIVEKIT_API_KEY": "--api-key", "LIVEKIT_API_SECRET": "--api-secret"}
SERVER_COMMANDS = {"start", "dev", "connect"}  # the LiveKit CLI commands that register with a server
LOCAL_COMMANDS = {"console"}
ALLOW_VERSION_MISMATCH = "--allow-version-mismatch"  # ours: stripped before LiveKit's CLI sees the arguments
DEFAULT_GREETING = "Hello, this is Diana at the clinic. How can I help you?"


def promoted_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(PROMOTED_ENV) or PROMOTED_PATH)


def worker_config(promoted: Promoted, environ: Mapping[str, str] | None = None) -> WorkbenchConfig:
    """The run's workbench config from the promoted file, so the worker talks to the endpoint that was measured.

    ``$WORKBENCH_CONFIG`` replaces it (e.g. a hosted endpoint in production); ``WORKBENCH__*`` variables
    override single keys either way. Without either, a file with no ``config`` gets the embedded default.
    """
    from workbench.core.config import ConfigError, WorkbenchConfig, env_overrides, load_config

    env = dict(os.environ if environ is None else environ)
    if env.get("WORKBENCH_CONFIG") or not promoted.config:
        return load_config(environ=env)

    def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for k, v in extra.items():
            out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
        return out

    try:
        return WorkbenchConfig.model_validate(merge(promoted.config, env_overrides(env)))
    except ValueError as e:
        raise ConfigError(f"promoted file config: {e}") from e


def check_promoted(promoted: Promoted) -> None:
    """Fail fast (before any model loads) when the strategy kind or its options, or the agent factory, are not
    valid here."""
    from workbench.strategies.registry import validate

    try:
        validate(promoted.strategy)
    except KeyError as e:
        raise PromotedFileError(str(e.args[0])) from e
    except ValueError as e:
        raise PromotedFileError(f"strategy {promoted.strategy_name!r}: {e}") from e
    if promoted.agent.factory is not None:  # loaded, not called: a call may need the job's event loop
        from workbench.pipeline.agents import AgentFactoryError, load_agent_factory

        try:
            load_agent_factory(promoted.agent.factory)
        except AgentFactoryError as e:
            raise PromotedFileError(f"agent.factory: {e}") from e


def session_from_promoted(
    promoted: Promoted | str | Path | None,
    stack: ModelStack,
    mode: Literal["text", "voice"] = "voice",
) -> tuple[AgentSession, Agent]:
    """The session and agent the worker runs for one call, from the promoted file (``None``: the default path).

    The agent is the promoted ``agent.factory``'s (the run's own agent) or, without one, the default agent
    with ``agent.instructions``; either way the session applies ``agent.speech_text`` before TTS.

    The strategy is the session's LLM (``session.llm``); close it with ``await session.llm.aclose()``
    after ``session.aclose()``: a session does not own its models.
    """
    from workbench.pipeline import build_agent, build_session
    from workbench.pipeline.agents import AgentFactoryError, make_user_agent
    from workbench.strategies import build

    if not isinstance(promoted, Promoted):
        promoted = load_promoted(promoted if promoted is not None else promoted_path())
    spec = promoted.agent
    if spec.factory is not None:  # the run's own agent, built by the same loader the harness used
        try:
            agent: Agent = make_user_agent(spec.factory)
        except AgentFactoryError as e:
            raise PromotedFileError(f"agent.factory: {e}") from e
    else:
        agent = build_agent(**({"instructions": spec.instructions} if spec.instructions else {}))
    strategy = build(dict(promoted.strategy), stack)
    return build_session(stack, strategy, mode=mode, speech_text=spec.speech_text), agent


# -- version parity ------------------------------------------------------------------------------
def version_check(promoted: Promoted, installed: Mapping[str, str | None] | None = None) -> VersionCheck:
    """The promoted strategy's measured livekit-agents and openai against this worker's (``installed``: real ones).

    Package metadata only, no imports of either package: runs in milliseconds, before anything loads.
    """
    from workbench.models.versions import check_versions

    return check_versions(promoted.measured_packages(), installed)


def version_mismatch_text(check: VersionCheck) -> str:
    """Both version sets in one sentence (the refusal and the override warning share it)."""
    if not check.recorded:
        return (
            "the promoted file does not record the versions its strategy was measured with (written by an older "
            f"workbench); this worker has {check.installed_text()}"
        )
    return f"promoted strategy was measured with {check.measured_text()}; this worker has {check.installed_text()}"


def version_refusal_text(check: VersionCheck) -> str:
    """The mismatch and the two ways out, as the one line the worker prints before exiting with 2."""
    fix = "re-run the suite on this stack" if check.recorded else "re-promote a run made on this stack"
    return f"{version_mismatch_text(check)} ({fix}, or pass {ALLOW_VERSION_MISMATCH})"


def model_warnings(promoted: Promoted, config: WorkbenchConfig) -> list[str]:
    """How this worker's model files differ (by sha256) from the measured ones: logged, never a refusal.

    A model file may legitimately be rebuilt or moved; a library version changes behaviour for certain.
    Hashes are cached under the config's state dir, so this is cheap after the first start.
    """
    from workbench.models.versions import model_differences, model_hashes

    measured = promoted.measured_models()
    if measured is None:
        return ["the promoted file records no model file hashes: this worker's model files are not checked"]
    try:
        here = model_hashes(config)
    except Exception as e:  # a warning-only check must never stop the worker
        return [f"cannot hash this worker's model files: {e}"]
    return [
        f"model {d.name} differs: measured {d.a or 'none'}, this worker has {d.b or 'none'}"
        for d in model_differences(measured, here)
    ]


# -- the LiveKit worker ---------------------------------------------------------------------------
def prewarm(proc: JobProcess) -> None:
    """Once per job process, before any call: load the models and start the LLM endpoint.

    The strategy itself is built per call (its HTTP client belongs to the call's event loop); a
    throw-away build here checks its config and warms whatever it loads into the stack.
    """
    from workbench.models import ModelStack
    from workbench.strategies import build

    promoted = load_promoted(promoted_path())
    stack = ModelStack(worker_config(promoted))
    stack.vad()
    stack.stt()
    stack.tts()
    build(dict(promoted.strategy), stack)  # starts the endpoint's llama.cpp server when it is local
    proc.userdata["stack"] = stack
    proc.userdata["promoted"] = promoted
    log.info("prewarmed strategy %s (run %s)", promoted.strategy_name, promoted.evidence.get("run_id"))


async def entrypoint(ctx: JobContext) -> None:
    """One call: the promoted session in the room, a greeting, a log line per turn, cleanup at the end."""
    stack: ModelStack = ctx.proc.userdata["stack"]
    promoted: Promoted = ctx.proc.userdata["promoted"]
    ctx.log_context_fields = {"strategy": promoted.strategy_name, "promoted_run": promoted.evidence.get("run_id")}
    session, agent = session_from_promoted(promoted, stack, mode="voice")
    strategy = session.llm

    def on_trace(trace: Any) -> None:
        log.info(
            "turn strategy=%s first_chunk_s=%s total_s=%s error=%s fallback=%s",
            trace.strategy,
            trace.first_chunk_s,
            trace.total_s,
            trace.error_kind,
            trace.fallback,
        )

    if hasattr(strategy, "on_trace"):
        strategy.on_trace(on_trace)

    async def close_strategy() -> None:
        if strategy is not None:
            await strategy.aclose()  # type: ignore[union-attr]

    ctx.add_shutdown_callback(close_strategy)
    await session.start(agent=agent, room=ctx.room)
    await ctx.connect()
    greeting = promoted.agent.greeting if promoted.agent.greeting is not None else DEFAULT_GREETING
    if greeting:
        session.say(greeting)


def build_server() -> AgentServer:
    """An ``AgentServer`` with :func:`prewarm` and :func:`entrypoint` (referenced through the importable module,
    so job processes find them even when this file runs as ``__main__``)."""
    from livekit.agents import AgentServer

    import workbench.worker as module

    server = AgentServer(
        setup_fnc=module.prewarm,
        # model loading takes seconds on two cores; the default 10 s is too tight with a RAG index
        initialize_process_timeout=float(os.environ.get("WORKBENCH_WORKER_INIT_TIMEOUT", "120")),
        # each idle process holds its own models and llama.cpp server (~0.5 GB): one by default
        num_idle_processes=int(os.environ.get("WORKBENCH_WORKER_IDLE_PROCESSES", "1")),
        job_memory_warn_mb=2000,
        # the health endpoint listens on loopback only (LiveKit's default is every interface); a container
        # whose probes come from outside sets WORKBENCH_WORKER_HOST=0.0.0.0
        host=os.environ.get("WORKBENCH_WORKER_HOST", "127.0.0.1"),
    )
    server.rtc_session(module.entrypoint)  # agent name: $LIVEKIT_AGENT_NAME (empty: dispatched to every room)
    return server


def _command(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def missing_credentials(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """The LiveKit credentials given neither as environment variables nor as ``--url``/``--api-key``/... flags."""
    env = os.environ if environ is None else environ
    flags = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    return [var for var, flag in CREDENTIALS.items() if not env.get(var) and flag not in flags]


def main(argv: Sequence[str] | None = None) -> int:
    """Check what a server command needs (one clear line and exit 2 if not), then hand over to LiveKit's CLI.

    Besides credentials and a usable promoted file, that is version parity: the installed livekit-agents
    and openai must be the ones the strategy was measured with, unless ``--allow-version-mismatch``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    allow_mismatch = ALLOW_VERSION_MISMATCH in args
    args = [a for a in args if a != ALLOW_VERSION_MISMATCH]
    command = _command(args)
    if command in SERVER_COMMANDS:
        missing = missing_credentials(args)
        if missing:
            print(
                f"workbench worker: cannot {command}: {', '.join(missing)} not set "
                "(LiveKit Cloud project keys, or a self-hosted livekit-server; see docs/worker.md)",
                file=sys.stderr,
            )
            return 2
    if command in SERVER_COMMANDS | LOCAL_COMMANDS:
        try:
            promoted = load_promoted(promoted_path())
            versions = version_check(promoted)
            if not versions.ok and not allow_mismatch:
                print(f"workbench worker: {version_refusal_text(versions)}", file=sys.stderr)
                return 2
            if not versions.ok:
                log.warning(
                    "workbench worker: starting despite %s: %s", ALLOW_VERSION_MISMATCH, version_mismatch_text(versions)
                )
            check_promoted(promoted)
            config = worker_config(promoted)
            from workbench.models.components import check_components

            check_components(config)  # a plugin that is not installed, or its key variable unset
        except ValueError as e:  # PromotedFileError, ConfigError (ComponentError)
            print(f"workbench worker: {e}", file=sys.stderr)
            return 2
        for warning in model_warnings(promoted, config):
            log.warning("workbench worker: %s", warning)

    from livekit.agents import cli

    sys.argv = [sys.argv[0], *args]
    # run_app's notice points at the `lk` tool; this module is the supported entry point here
    warnings.filterwarnings("ignore", message="the built-in Python CLI is deprecated", category=DeprecationWarning)
    cli.run_app(build_server())
    return 0


if __name__ == "__main__":
    sys.exit(main())
