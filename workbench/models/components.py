"""Pipeline components named by factory in the config (``stt: {use: "livekit.plugins.deepgram:STT", ...}``).

Everything a factory section can get wrong (a module that is not installed, a name that is not in it, an
argument the factory does not take, a key variable that is not set) is found by :func:`check_components`
before a run starts, in one line naming each field, so a sweep does not fail an hour in.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from workbench.core.config import ConfigError, Factory, WorkbenchConfig
from workbench.models.versions import distribution_of


class ComponentError(ConfigError):
    """A factory section that cannot build its component; the message names the config field."""


def _install_hint(module: str) -> str:
    return f"pip install {distribution_of(module) or module.split('.')[0]}"


def load_factory(field: str, f: Factory) -> Callable[..., Any]:
    """The callable ``f.use`` names (``module:name`` or ``module:Class.method``)."""
    module_name, attr = f.use.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ComponentError(
            f"{field}.use: module {module_name!r} is not installed ({_install_hint(module_name)})"
        ) from e
    except Exception as e:  # a plugin that fails on import (a missing system library, a version clash)
        raise ComponentError(f"{field}.use: importing {module_name!r} failed: {type(e).__name__}: {e}") from e
    factory: Any = module
    for part in attr.split("."):  # "VAD.load": a classmethod, as LiveKit's own plugins build some components
        factory = getattr(factory, part, None)
    if not callable(factory):
        raise ComponentError(f"{field}.use: {module_name!r} has no callable {attr!r}")
    return factory


def _kwargs(field: str, f: Factory, environ: Mapping[str, str] | None) -> dict[str, Any]:
    kwargs = f.args
    if f.api_key_env:
        key = f.api_key(environ)
        if key is None:
            raise ComponentError(
                f"{field}.api_key_env: environment variable {f.api_key_env} is not set (nor in ./.env)"
            )
        kwargs["api_key"] = key
    return kwargs


def check_factory(field: str, f: Factory, environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`ComponentError` if ``f`` cannot be called as configured; builds nothing."""
    factory = load_factory(field, f)
    kwargs = _kwargs(field, f, environ)
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return  # a builtin without a signature: the call itself will tell
    try:
        signature.bind(**kwargs)
    except TypeError as e:
        raise ComponentError(f"{field}: {f.use} does not accept these arguments: {e}") from e


def build_component(field: str, f: Factory, environ: Mapping[str, str] | None = None) -> Any:
    """The component: ``f.use(**args, api_key=...)``; a factory that raises is reported naming the field."""
    factory = load_factory(field, f)
    kwargs = _kwargs(field, f, environ)
    try:
        return factory(**kwargs)
    except TypeError as e:
        raise ComponentError(f"{field}: {f.use} does not accept these arguments: {e}") from e


def factories(config: WorkbenchConfig) -> dict[str, Factory]:
    """The config's factory sections by field name."""
    found = {name: getattr(config, name) for name in ("llm", "stt", "tts", "vad")}
    found.update({f"endpoints.{name}": ep for name, ep in config.endpoints.items()})
    found["turn.detector"] = config.turn.detector
    return {name: f for name, f in found.items() if isinstance(f, Factory)}


def check_components(config: WorkbenchConfig, environ: Mapping[str, str] | None = None) -> None:
    """Every factory section checked; all problems in one :class:`ComponentError`, each naming its field."""
    problems = []
    for field, f in factories(config).items():
        try:
            check_factory(field, f, environ)
        except ComponentError as e:
            problems.append(str(e))
    if problems:
        raise ComponentError("; ".join(problems))


__all__ = ["ComponentError", "build_component", "check_components", "check_factory", "factories", "load_factory"]
