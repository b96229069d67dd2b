"""The production worker's command line and configuration (no LiveKit server exists here)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from workbench.pipeline.promoted import Promoted, PromotedFileError, load_promoted, write_promoted
from workbench.worker import check_promoted, main, missing_credentials, promoted_path, worker_config

REPO = Path(__file__).resolve().parents[2]


def _run_worker(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "WORKBENCH"))}
    return subprocess.run(
        [sys.executable, "-m", "workbench.worker", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=cwd,
        timeout=120,
    )


def test_help_lists_the_livekit_commands() -> None:
    res = _run_worker("--help", env={"COLUMNS": "120"})
    assert res.returncode == 0, res.stderr
    assert all(cmd in res.stdout for cmd in ("start", "dev", "console"))


def test_start_without_credentials_is_one_clear_line(tmp_path: Path) -> None:
    res = _run_worker("start", cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert lines[0].startswith("workbench worker: cannot start: LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET")


def test_start_without_a_promoted_file_says_how_to_make_one(tmp_path: Path) -> None:
    creds = {"LIVEKIT_URL": "ws://127.0.0.1:1", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s"}
    res = _run_worker("start", env={**creds, "WORKBENCH_PROMOTED": str(tmp_path / "none.yaml")})
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "no promoted strategy at" in res.stderr and "workbench promote RUN --strategy NAME" in res.stderr


def test_credentials_may_come_from_flags() -> None:
    env = {"LIVEKIT_URL": "wss://x.livekit.cloud"}
    assert missing_credentials(["start"], env) == ["LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"]
    assert missing_credentials(["start", "--api-key", "k", "--api-secret=s"], env) == []
    assert missing_credentials(["start"], {}) == ["LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"]


def test_promoted_path_is_overridable(tmp_path: Path) -> None:
    assert promoted_path({}) == Path("worker/promoted.yaml")
    assert promoted_path({"WORKBENCH_PROMOTED": str(tmp_path / "p.yaml")}) == tmp_path / "p.yaml"


def test_worker_uses_the_runs_config_unless_told_otherwise(tmp_path: Path) -> None:
    run_config = {"llm": {"kind": "local", "max_tokens": 64}, "tts": {"kind": "espeak"}}
    p = Promoted(strategy={"kind": "plain"}, config=run_config)
    cfg = worker_config(p, environ={})
    assert (cfg.llm.max_tokens, cfg.tts.kind) == (64, "espeak")
    cfg = worker_config(p, environ={"WORKBENCH__LLM__MAX_TOKENS": "32"})
    assert (cfg.llm.max_tokens, cfg.tts.kind) == (32, "espeak")  # one key overridden, the rest kept
    f = tmp_path / "prod.yaml"
    f.write_text("llm: {kind: openai, base_url: https://api.example.com/v1, model: m, api_key_env: K}\n")
    cfg = worker_config(p, environ={"WORKBENCH_CONFIG": str(f)})
    assert (cfg.llm.kind, cfg.llm.model, cfg.tts.kind) == ("openai", "m", "piper")  # the file replaces it
    assert worker_config(Promoted(strategy={"kind": "plain"}), environ={}).llm.gguf == "smollm2"


def test_promoted_file_errors_are_clear(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    with pytest.raises(PromotedFileError, match="no promoted strategy at"):
        load_promoted(f)
    f.write_text("- plain\n")
    with pytest.raises(PromotedFileError, match="expected a mapping"):
        load_promoted(f)
    f.write_text("strategy: {top_k: 3}\n")
    with pytest.raises(PromotedFileError, match="needs a 'kind'"):
        load_promoted(f)
    write_promoted(Promoted(strategy={"kind": "nope", "name": "x"}), f)
    with pytest.raises(PromotedFileError, match="'nope' is not registered"):
        check_promoted(load_promoted(f))
    with pytest.raises(PromotedFileError, match="top_kk"):
        check_promoted(Promoted(strategy={"kind": "rag", "top_kk": 3}))
    check_promoted(Promoted(strategy={"kind": "rag", "name": "rag", "top_k": 2}))  # valid: no error


# -- version parity -------------------------------------------------------------------------------
CREDS = {"LIVEKIT_URL": "ws://127.0.0.1:1", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s"}
THIS_STACK = {"livekit-agents": metadata.version("livekit-agents"), "openai": metadata.version("openai")}
OTHER_STACK = {"livekit-agents": "1.8.6", "openai": "2.54.0"}
MODELS = {"llm": {"file": "SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": "a" * 64}}
REFUSAL = (
    "workbench worker: promoted strategy was measured with livekit-agents 1.8.6, openai 2.54.0; this worker has "
    f"livekit-agents {THIS_STACK['livekit-agents']}, openai {THIS_STACK['openai']} "
    "(re-run the suite on this stack, or pass --allow-version-mismatch)"
)


def _promoted_file(tmp_path: Path, packages: dict[str, str] | None, models: dict | None = MODELS) -> Path:
    f = tmp_path / "promoted.yaml"
    measured = None if packages is None else {"workbench": "0.1.0", "packages": packages, "models": models}
    config = {"state_dir": str(tmp_path / "state")}
    write_promoted(Promoted(strategy={"kind": "plain", "name": "plain"}, config=config, measured_with=measured), f)
    return f


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """Credentials set, this machine's model hashes faked, and LiveKit's run_app replaced: nothing starts."""
    from livekit.agents import cli

    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(sys, "argv", ["worker"])
    monkeypatch.setattr("workbench.models.versions.model_hashes", lambda config, state_dir=None: MODELS)
    calls: list[list[str]] = []
    monkeypatch.setattr(cli, "run_app", lambda server: calls.append(list(sys.argv)))
    return calls


def test_worker_refuses_a_strategy_measured_on_other_versions(
    started: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORKBENCH_PROMOTED", str(_promoted_file(tmp_path, OTHER_STACK)))
    assert main(["start"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [REFUSAL] and not started


def test_allow_version_mismatch_starts_and_logs_both_version_sets(
    started: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WORKBENCH_PROMOTED", str(_promoted_file(tmp_path, OTHER_STACK)))
    with caplog.at_level(logging.WARNING, logger="workbench.worker"):
        assert main(["start", "--allow-version-mismatch", "--log-level", "info"]) == 0
    assert started == [["worker", "start", "--log-level", "info"]]  # LiveKit's CLI never sees our flag
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "--allow-version-mismatch" in text and "livekit-agents 1.8.6, openai 2.54.0" in text
    assert f"this worker has livekit-agents {THIS_STACK['livekit-agents']}, openai {THIS_STACK['openai']}" in text


def test_matching_versions_start_and_different_model_files_only_warn(
    started: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WORKBENCH_PROMOTED", str(_promoted_file(tmp_path, THIS_STACK)))
    with caplog.at_level(logging.WARNING, logger="workbench.worker"):
        assert main(["start"]) == 0
    assert len(started) == 1 and not caplog.records  # same stack, same model files: nothing to say
    other_models = {"llm": {"file": "SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": "b" * 64}}
    monkeypatch.setenv("WORKBENCH_PROMOTED", str(_promoted_file(tmp_path, THIS_STACK, other_models)))
    with caplog.at_level(logging.WARNING, logger="workbench.worker"):
        assert main(["start"]) == 0  # a different model file is a warning, not a refusal
    assert len(started) == 2
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning == (
        f"workbench worker: model llm differs: measured SmolLM2-135M-Instruct.Q4_1.gguf sha256 {'b' * 12}, "
        f"this worker has SmolLM2-135M-Instruct.Q4_1.gguf sha256 {'a' * 12}"
    )


def test_a_promoted_file_without_versions_is_a_mismatch_the_flag_overrides(
    started: list,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("WORKBENCH_PROMOTED", str(_promoted_file(tmp_path, None)))
    assert main(["console"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("workbench worker: the promoted file does not record the versions its strategy was measured")
    assert line.endswith("(re-promote a run made on this stack, or pass --allow-version-mismatch)")
    with caplog.at_level(logging.WARNING, logger="workbench.worker"):
        assert main(["console", "--allow-version-mismatch"]) == 0
    assert started == [["worker", "console"]]
    assert any("does not record the versions" in r.getMessage() for r in caplog.records)
    assert any("records no model file hashes" in r.getMessage() for r in caplog.records)


def test_version_refusal_is_one_line_before_anything_loads(tmp_path: Path) -> None:
    promoted = _promoted_file(tmp_path, OTHER_STACK)
    res = _run_worker("start", env={**CREDS, "WORKBENCH_PROMOTED": str(promoted)}, cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.splitlines() == [REFUSAL]
    assert not (tmp_path / "state").exists()  # refused before hashing or loading any model


def test_a_promoted_agent_factory_that_cannot_be_loaded_stops_the_worker_before_it_starts(tmp_path: Path) -> None:
    from workbench.worker import check_promoted

    promoted = Promoted(strategy={"kind": "plain"}, agent={"factory": str(tmp_path / "missing_agent.py") + ":build"})
    with pytest.raises(PromotedFileError, match=r"agent\.factory: "):
        check_promoted(promoted)
