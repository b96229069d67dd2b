"""The production worker's command line and configuration (no LiveKit server exists here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.promote import Promoted, PromotedFileError, load_promoted, write_promoted
from workbench.worker import check_promoted, missing_credentials, promoted_path, worker_config

REPO = Path(__file__).resolve().parents[2]


def _run_worker(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "WORKBENCH"))}
    return subprocess.run([sys.executable, "-m", "workbench.worker", *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, cwd=cwd, timeout=120)  # fmt: skip


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
