"""What a run was measured with: package versions and model file hashes, and how two such records differ.

The run manifest records them (:func:`environment_info`), ``workbench promote``
copies them into ``worker/promoted.yaml`` (``measured_with``), the worker refuses to start on another
livekit-agents or openai than was measured, and ``workbench report --vs`` flags runs measured on
different stacks. This module imports neither the replay layer nor the model stack at import time,
so the worker's check costs milliseconds; the model assets are imported only when hashing them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.core.io import atomic_write_json

if TYPE_CHECKING:
    from workbench.core.config import EndpointConfig, WorkbenchConfig

WORKBENCH_DIST = "dianachat-workbench"
TRACKED_PACKAGES = (
    WORKBENCH_DIST,
    "livekit-agents",
    "livekit",  # the rtc bindings
    "openai",
    "httpx",
    "httpx2",
    "aiohttp",
    "ragas",
    "llama-index-core",
    "llama_cpp_python",
    "faster-whisper",
    "piper-tts",
    "autogen-agentchat",
    "torch",
    "pandas",
)
"""Recorded when installed; every ``livekit*`` distribution (plugins included) is found and added too."""

WORKER_CHECKED = ("livekit-agents", "openai")
"""The worker refuses to start when these differ from what the promoted strategy was measured with."""

PARITY_EXACT = frozenset({"livekit-agents", "livekit", "openai", "httpx", "httpx2", "aiohttp"})
"""With every ``livekit*`` distribution: the packages whose differences ``report --vs`` warns about."""

HASH_CACHE_FILE = "file-hashes.json"
NOT_RECORDED = "not recorded"


def canonical(name: str) -> str:
    """PEP 503 form (``livekit_plugins_openai`` -> ``livekit-plugins-openai``), so lookups match however spelled."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_parity_package(name: str) -> bool:
    """A package whose version changes what a voice turn measures (LiveKit, the OpenAI client, its transport)."""
    n = canonical(name)
    return n in PARITY_EXACT or n.startswith("livekit")


def livekit_distributions() -> dict[str, str]:
    """Every installed ``livekit*`` distribution (rtc, agents, api, protocol, every ``livekit-plugins-*``).

    Found through :mod:`importlib.metadata`, not a fixed list, so a plugin added later is recorded too.
    The first of duplicate entries wins, as for :func:`importlib.metadata.version`.
    """
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = canonical(dist.name or "")
        if name.startswith("livekit") and name not in found:
            found[name] = dist.version
    return dict(sorted(found.items()))


def package_versions(packages: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (missing ones left out) plus every ``livekit*`` distribution."""
    versions: dict[str, str] = {}
    for pkg in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    for name, version in livekit_distributions().items():
        versions.setdefault(name, version)
    return versions


def installed_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def distribution_of(module: str) -> str | None:
    """The distribution that provides ``module`` (``livekit.plugins.x`` -> ``livekit-plugins-x``, which
    share the ``livekit`` top-level package); None when nothing installed provides it."""
    parts = module.split(".")
    if parts[:2] == ["livekit", "plugins"] and len(parts) > 2:
        return f"livekit-plugins-{parts[2].replace('_', '-')}"
    return next(iter(metadata.packages_distributions().get(parts[0], [])), None)


def factory_record(use: str) -> dict[str, Any]:
    """A factory component's import path and the distribution (and version) that provides it."""
    dist = distribution_of(use.split(":")[0])
    return {"use": use, "package": dist, "version": installed_version(dist) if dist else None}


def workbench_version() -> str | None:
    return installed_version(WORKBENCH_DIST)


def lookup(versions: Mapping[str, Any] | None, package: str) -> str | None:
    """``package``'s version in a recorded mapping, whatever spelling the record used for its name."""
    if not versions:
        return None
    want = canonical(package)
    for name, version in versions.items():
        if canonical(str(name)) == want and version is not None:
            return str(version)
    return None


# -- model file hashes ----------------------------------------------------------------------------
def machine_cache_dir() -> Path:
    """Where file hashes are cached: per machine, not per state folder, since they describe installed files
    (``$XDG_CACHE_HOME`` or ``~/.cache``); every test's fresh state folder would otherwise re-hash ~300 MB."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dianachat-workbench"


def _read_cache(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path | None, cache: dict[str, Any]) -> None:
    """Best effort and atomic: a lost or unwritable cache only means hashing the file again next time."""
    if path is None:
        return
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, cache, indent=1, sort_keys=True)


def file_sha256(path: str | Path, state_dir: str | Path | None = None) -> str:
    """A file's sha256, cached in ``<state_dir>/file-hashes.json`` keyed by path, size and mtime.

    A 100 MB model costs ~0.2 s to hash; the cache makes every later run (and worker start) free,
    and a replaced file (new size or mtime) is hashed again.
    """
    p = Path(path).resolve()
    st = p.stat()
    cache_path = Path(state_dir) / HASH_CACHE_FILE if state_dir is not None else None
    cache = _read_cache(cache_path)
    key = str(p)
    hit = cache.get(key)
    if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
        return str(hit["sha256"])
    with p.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    cache[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    _write_cache(cache_path, cache)
    return digest


def _file_record(path: Path, state_dir: Path | None) -> dict[str, Any]:
    """File name (not the machine-specific path), size and sha256."""
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path, state_dir)}


def _gguf_record(ep: EndpointConfig, state_dir: Path | None) -> dict[str, Any]:
    from workbench.models import assets

    if ep.gguf in ("qwen2.5-coder-0.5b", "qwen2.5-0.5b"):
        # assembled from six packages on first use and verified against this pinned hash then; resolving
        # it here would assemble 400 MB before anything runs, so the pin stands for the file
        return {"gguf": ep.gguf, "sha256": assets.QWEN05_SHA256, "pinned": True}
    return {"gguf": ep.gguf, **_file_record(assets.resolve_gguf(ep.gguf), state_dir)}


def _whisper_record(size: str, state_dir: Path | None) -> dict[str, Any]:
    from workbench.models import assets

    if size == "base":  # assembled into the cache on first load (see assets.whisper_dir); not done here
        model_bin = assets.cache_dir() / "models" / "whisper-base" / "model.bin"
        if not model_bin.is_file():
            return {"model": size, "file": "model.bin", "sha256": None, "note": "not assembled yet"}
        return {"model": size, **_file_record(model_bin, state_dir)}
    return {"model": size, **_file_record(assets.whisper_dir(size) / "model.bin", state_dir)}


def model_hashes(config: WorkbenchConfig, state_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """sha256 of every model file ``config`` points at: each local endpoint's GGUF (``llm``, ``llm:<name>``),
    Whisper's ``model.bin`` (``stt``), the Piper voice (``tts``) and the MiniLM weights (``embeddings``).

    Nothing is downloaded or assembled; a missing asset is recorded with its error instead of raising,
    so a manifest is still written. ``state_dir`` (default: the config's) holds the hash cache.
    """
    from workbench.core.config import EndpointConfig, Factory
    from workbench.models import assets

    cache = Path(state_dir) if state_dir is not None else machine_cache_dir()
    jobs: list[tuple[str, Any]] = []
    for name, ep in [("llm", config.llm), *((f"llm:{n}", e) for n, e in config.endpoints.items())]:
        if isinstance(ep, EndpointConfig) and ep.kind == "local":
            jobs.append((name, lambda ep=ep: _gguf_record(ep, cache)))
        elif isinstance(ep, Factory):  # what ran is its import path and its package's version
            jobs.append((name, lambda ep=ep: factory_record(ep.use)))
    for role in ("stt", "tts", "vad"):
        section = getattr(config, role)
        if getattr(section, "use", None):  # a factory: what ran is its import path and its package's version
            jobs.append((role, lambda s=section: factory_record(s.use)))
    if getattr(config.stt, "kind", None) == "whisper":
        jobs.append(("stt", lambda: _whisper_record(config.stt.model, cache)))  # type: ignore[union-attr]
    if getattr(config.tts, "kind", None) == "piper":
        jobs.append(("tts", lambda: _file_record(assets.piper_voice(), cache)))
    if config.embeddings.kind == "minilm":
        jobs.append(("embeddings", lambda: _file_record(assets.minilm_dir() / "model.safetensors", cache)))
    out: dict[str, dict[str, Any]] = {}
    for role, job in jobs:
        try:
            out[role] = job()
        except (OSError, RuntimeError, ValueError) as e:  # MissingAssetError is a RuntimeError
            out[role] = {"sha256": None, "error": str(e)}
    return out


def measured_with(config: WorkbenchConfig | None = None, state_dir: str | Path | None = None) -> dict[str, Any]:
    """This process's stack as a record: workbench version, package versions, model hashes (with a config)."""
    record: dict[str, Any] = {"workbench": workbench_version(), "packages": package_versions()}
    if config is not None:
        record["models"] = model_hashes(config, state_dir)
    return record


# -- comparing records ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Difference:
    """One way two stacks differ: a package version or a model file's hash (``None``: not recorded)."""

    kind: str  # "package" or "model"
    name: str
    a: str | None
    b: str | None

    def describe(self, a_label: str = "this run", b_label: str = "the other run") -> str:
        if self.name == "*":  # one side records nothing of this kind
            what = "package versions" if self.kind == "package" else "model hashes"
            return f"{what}: recorded in {a_label if self.a else b_label} only"
        return f"{self.kind} {self.name}: {a_label} {self.a or NOT_RECORDED}, {b_label} {self.b or NOT_RECORDED}"


def _model_text(record: Mapping[str, Any] | None) -> str | None:
    if not isinstance(record, Mapping) or not record.get("sha256"):
        return None
    label = record.get("file") or record.get("gguf") or "?"
    return f"{label} sha256 {str(record['sha256'])[:12]}"


def version_differences(
    a: Mapping[str, Any] | None, b: Mapping[str, Any] | None, packages: Iterable[str] | None = None
) -> list[Difference]:
    """Packages whose versions differ between two records (default: the parity packages, :func:`is_parity_package`).

    A package recorded on one side only counts as a difference; when one side records no versions at
    all, that is one difference (``*``), not one per package.
    """
    if not a and not b:
        return []
    if not a or not b:
        return [Difference("package", "*", "recorded" if a else None, "recorded" if b else None)]
    names = list(packages) if packages is not None else [n for n in {**a, **b} if is_parity_package(str(n))]
    seen: set[str] = set()
    out = []
    for name in names:
        key = canonical(str(name))
        if key in seen:
            continue
        seen.add(key)
        va, vb = lookup(a, key), lookup(b, key)
        if va != vb:
            out.append(Difference("package", key, va, vb))
    return sorted(out, key=lambda d: d.name)


def model_differences(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> list[Difference]:
    """Model roles whose files differ by sha256 (or are recorded on one side only); ``[]`` if neither records any."""
    if not a and not b:
        return []
    if not a or not b:
        return [Difference("model", "*", "recorded" if a else None, "recorded" if b else None)]
    out = []
    for role in sorted({*a, *b}):
        ra, rb = a.get(role), b.get(role)
        sa = ra.get("sha256") if isinstance(ra, Mapping) else None
        sb = rb.get("sha256") if isinstance(rb, Mapping) else None
        if sa != sb:
            out.append(Difference("model", str(role), _model_text(ra), _model_text(rb)))
    return out


def stack_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Difference]:
    """Parity-relevant differences between two run manifests (their ``versions`` and ``models``)."""
    return version_differences(a.get("versions"), b.get("versions")) + model_differences(
        a.get("models"), b.get("models")
    )


def format_versions(
    versions: Mapping[str, Any] | None, packages: Iterable[str] = WORKER_CHECKED, missing: str = NOT_RECORDED
) -> str:
    """``livekit-agents 1.8.9, openai 3.63.0`` (``missing`` in place of an absent version)."""
    return ", ".join(f"{p} {lookup(versions, p) or missing}" for p in packages)


@dataclass(frozen=True)
class VersionCheck:
    """The worker's check: the versions the promoted strategy was measured with against the installed ones."""

    measured: dict[str, str | None]
    installed: dict[str, str | None]
    recorded: bool  # False: the promoted file records no versions at all (an older format)

    @property
    def ok(self) -> bool:
        return self.recorded and all(
            self.measured[p] is not None and self.measured[p] == self.installed[p] for p in self.measured
        )

    def measured_text(self) -> str:
        return format_versions(self.measured, list(self.measured))

    def installed_text(self) -> str:
        return format_versions(self.installed, list(self.installed), missing="not installed")


def check_versions(
    measured: Mapping[str, Any] | None,
    installed: Mapping[str, Any] | None = None,
    packages: Iterable[str] = WORKER_CHECKED,
) -> VersionCheck:
    """Compare ``packages`` as recorded in ``measured`` with ``installed`` (default: this environment).

    A package the record leaves out is a mismatch: what was not recorded cannot be shown to be the same.
    """
    pkgs = list(packages)
    have = {p: lookup(installed, p) for p in pkgs} if installed is not None else {p: installed_version(p) for p in pkgs}
    return VersionCheck({p: lookup(measured, p) for p in pkgs}, have, bool(measured))


def environment_info(config: WorkbenchConfig | None = None) -> dict[str, Any]:
    """Versions, model hashes, machine and git commit for the manifest (never environment variables).

    ``versions`` holds every ``livekit*`` distribution besides the tracked packages, and ``models`` the
    sha256 of each model file ``config`` points at (only when given the run's config: a guessed config
    would record hashes of files the run never used). ``workbench promote`` copies both into the promoted
    file, and the worker checks them (:mod:`workbench.models.versions`).
    """
    models = {"models": model_hashes(config)} if config is not None else {}
    try:
        repo = Path(__file__).resolve().parents[3]
        git = ["git", "-C", str(repo)]
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
        status = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        commit, dirty = commit or None, bool(status)
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    import psutil

    return {
        "versions": package_versions(),
        "workbench_version": workbench_version(),
        **models,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "host": platform.node(),
        },
        "git_commit": commit,
        "git_dirty": dirty,
    }


__all__ = [
    "NOT_RECORDED",
    "TRACKED_PACKAGES",
    "WORKER_CHECKED",
    "Difference",
    "VersionCheck",
    "canonical",
    "check_versions",
    "file_sha256",
    "format_versions",
    "installed_version",
    "is_parity_package",
    "livekit_distributions",
    "lookup",
    "measured_with",
    "model_differences",
    "model_hashes",
    "package_versions",
    "stack_differences",
    "version_differences",
    "workbench_version",
]
