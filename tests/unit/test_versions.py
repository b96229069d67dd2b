"""Version parity records: what a run measured (packages, model hashes), cached hashing, and how stacks differ."""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

import pytest

from workbench.core.config import WorkbenchConfig
from workbench.models import versions as v
from workbench.models.versions import environment_info


def test_versions_cover_livekit_and_its_plugins_found_from_metadata() -> None:
    got = v.package_versions()
    for pkg in ("livekit-agents", "livekit", "openai", "httpx2", "dianachat-workbench"):
        assert got[pkg] == metadata.version(pkg), pkg
    plugins = {
        v.canonical(d.name) for d in metadata.distributions() if v.canonical(d.name).startswith("livekit-plugins-")
    }
    assert plugins and plugins <= set(got)  # every installed plugin, not a fixed list
    assert got["livekit-plugins-openai"] == metadata.version("livekit-plugins-openai")
    assert v.workbench_version() == metadata.version("dianachat-workbench")


def test_file_hash_is_cached_by_path_size_and_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f, state = tmp_path / "model.bin", tmp_path / "state"
    f.write_bytes(b"weights" * 1000)
    want = hashlib.sha256(f.read_bytes()).hexdigest()
    assert v.file_sha256(f, state) == want
    cached = json.loads((state / v.HASH_CACHE_FILE).read_text())
    assert cached[str(f.resolve())]["sha256"] == want and cached[str(f.resolve())]["size"] == 7000

    def no_hashing(*a: object, **k: object) -> None:
        raise AssertionError("hashed again despite an unchanged file")

    monkeypatch.setattr(v.hashlib, "file_digest", no_hashing)
    assert v.file_sha256(f, state) == want  # served from the cache
    monkeypatch.undo()
    f.write_bytes(b"other weights")  # replaced: new size and mtime
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert v.file_sha256(f, state) == hashlib.sha256(b"other weights").hexdigest()
    (state / v.HASH_CACHE_FILE).write_text("{not json")  # a broken cache is only a miss
    assert v.file_sha256(f, state) == hashlib.sha256(b"other weights").hexdigest()


def test_model_hashes_of_the_default_stack(tmp_path: Path) -> None:
    from workbench.models import assets

    models = v.model_hashes(WorkbenchConfig(), state_dir=tmp_path)
    assert set(models) == {"llm", "stt", "tts", "embeddings"}
    size = assets.smollm2_gguf().stat().st_size
    assert models["llm"] == {
        "gguf": "smollm2",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "bytes": size,
        "sha256": assets.SMOLLM2_SHA256,
    }
    assert models["stt"]["file"] == "model.bin" and models["stt"]["model"] == "tiny.en"
    assert models["tts"]["file"] == "en_US-joe-medium.onnx"
    assert models["embeddings"]["file"] == "model.safetensors"
    assert all(len(m["sha256"]) == 64 for m in models.values())
    assert "/" not in json.dumps([m["file"] for m in models.values()])  # names, not machine paths
    assert (tmp_path / v.HASH_CACHE_FILE).exists()


def test_model_hashes_record_what_is_missing_instead_of_raising(tmp_path: Path) -> None:
    from workbench.models.assets import QWEN05_SHA256

    cfg = WorkbenchConfig.model_validate(
        {
            "llm": {"kind": "openai", "base_url": "http://x/v1", "model": "m"},
            "endpoints": {"small": {"gguf": str(tmp_path / "missing.gguf")}, "qwen": {"gguf": "qwen2.5-0.5b"}},
            "tts": {"kind": "espeak"},
            "state_dir": str(tmp_path),
        }
    )
    models = v.model_hashes(cfg)
    assert "llm" not in models and "tts" not in models  # a hosted endpoint and espeak have no model file here
    assert models["llm:small"]["sha256"] is None and "missing.gguf" in models["llm:small"]["error"]
    assert models["llm:qwen"] == {"gguf": "qwen2.5-0.5b", "sha256": QWEN05_SHA256, "pinned": True}  # not assembled


def test_environment_info_records_versions_and_the_runs_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    info = environment_info(WorkbenchConfig(state_dir=tmp_path))
    assert {"versions", "workbench_version", "models", "machine", "git_commit", "git_dirty"} <= set(info)
    for pkg in ("livekit-agents", "livekit", "openai", "httpx2", "livekit-plugins-openai", "livekit-plugins-silero"):
        assert info["versions"][pkg] == metadata.version(pkg)
    assert info["workbench_version"] == metadata.version("dianachat-workbench")
    assert info["models"]["llm"]["sha256"] and info["models"]["stt"]["sha256"]
    assert "sk-secret-value" not in json.dumps(info)
    assert "models" not in environment_info()  # without the run's config, no guessed hashes


def test_differences_between_stacks() -> None:
    a = {
        "versions": {"livekit-agents": "1.8.6", "openai": "2.54.0", "livekit_plugins_openai": "1.8.6", "pandas": "2.0"},
        "models": {"llm": {"file": "a.gguf", "sha256": "a" * 64}, "stt": {"file": "model.bin", "sha256": "b" * 64}},
    }
    b = {
        "versions": {
            "livekit-agents": "1.8.9",
            "openai": "2.54.0",
            "livekit-plugins-openai": "1.8.9",
            "livekit-plugins-silero": "1.8.9",
            "pandas": "2.2",
        },
        "models": {"llm": {"file": "a.gguf", "sha256": "c" * 64}, "stt": {"file": "model.bin", "sha256": "b" * 64}},
    }
    diffs = v.stack_differences(a, b)
    assert [(d.kind, d.name, d.a, d.b) for d in diffs] == [
        ("package", "livekit-agents", "1.8.6", "1.8.9"),
        ("package", "livekit-plugins-openai", "1.8.6", "1.8.9"),  # the same package however its name is spelled
        ("package", "livekit-plugins-silero", None, "1.8.9"),
        ("model", "llm", f"a.gguf sha256 {'a' * 12}", f"a.gguf sha256 {'c' * 12}"),
    ]  # pandas is recorded and shown, but is not a parity package
    assert diffs[2].describe("r1", "r2") == "package livekit-plugins-silero: r1 not recorded, r2 1.8.9"
    assert v.stack_differences(a, a) == []
    old = {"versions": {"livekit-agents": "1.8.6"}}  # a run from before model hashes were recorded
    assert [d.describe("r1", "old") for d in v.stack_differences(a, old)] == [
        "package livekit-plugins-openai: r1 1.8.6, old not recorded",
        "package openai: r1 2.54.0, old not recorded",
        "model hashes: recorded in r1 only",
    ]
    assert v.stack_differences({}, {}) == []


def test_check_versions_for_the_worker() -> None:
    installed = {"livekit-agents": "1.8.9", "openai": "3.63.0"}
    same = v.check_versions({"livekit-agents": "1.8.9", "openai": "3.63.0", "pandas": "1"}, installed)
    assert same.ok
    other = v.check_versions({"livekit_agents": "1.8.6", "openai": "2.54.0"}, installed)
    assert not other.ok and other.recorded
    assert other.measured_text() == "livekit-agents 1.8.6, openai 2.54.0"
    assert other.installed_text() == "livekit-agents 1.8.9, openai 3.63.0"
    partial = v.check_versions({"livekit-agents": "1.8.9"}, installed)
    assert not partial.ok and partial.measured_text() == "livekit-agents 1.8.9, openai not recorded"
    none = v.check_versions(None, {"livekit-agents": "1.8.9"})
    assert not none.ok and not none.recorded and none.installed_text() == "livekit-agents 1.8.9, openai not installed"
    assert v.check_versions({"livekit-agents": "x"}).installed == {
        "livekit-agents": metadata.version("livekit-agents"),
        "openai": metadata.version("openai"),
    }
