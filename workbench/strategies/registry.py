"""Strategies registered by name and built from YAML-shaped config.

``build("plain")`` or ``build({"kind": "rag", "top_k": 4, "fallback": "extractive"})``. A strategy
class declares its YAML keys as a pydantic ``Config``; the registry validates them and builds the
strategy on a model stack, so a strategy never handles its own config, endpoint or fallback.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from workbench.core.config import ConfigError, LLMFactory, WorkbenchConfig
from workbench.models import ModelStack
from workbench.strategies.base import Strategy, StrategyOptions

REGISTRY: dict[str, type[Strategy]] = {}

Spec = str | dict[str, Any] | Path


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy buildable by its ``kind``.

    A class redefined in place (same module and name: a re-run notebook cell, a reloaded module)
    replaces its earlier version; another class claiming a taken kind is an error.
    """
    old = REGISTRY.get(cls.kind)
    if old is not None and (old.__module__, old.__qualname__) == (cls.__module__, cls.__qualname__):
        REGISTRY[cls.kind] = cls
        return cls
    if cls.kind in REGISTRY and REGISTRY[cls.kind] is not cls:
        raise ValueError(f"strategy kind {cls.kind!r} is already registered by {REGISTRY[cls.kind].__name__}")
    REGISTRY[cls.kind] = cls
    return cls


def available() -> dict[str, str]:
    """Registered kinds with the first line of their docstring."""
    _load_builtins()
    return {k: (c.__doc__ or "").strip().splitlines()[0] for k, c in sorted(REGISTRY.items())}


BUILTIN_MODULES = {
    "plain": "builtin",
    "extractive": "rag",
    "rag": "rag",
    "rag_middleware": "rag",
    "hybrid": "agents",
    "autogen": "agents",
    "multi_agent": "agents",
    "ag2": "ag2",
    "ag2_team": "ag2",
}
"""Which module registers each built-in kind: building one imports only its module (AG2 and AutoGen
cost about a second of start-up that ``plain`` does not need)."""


def _load_builtins(kind: str | None = None) -> None:
    """Importing a strategy module registers its strategies: ``kind``'s module, or all of them."""
    import importlib

    modules = {BUILTIN_MODULES[kind]} if kind in BUILTIN_MODULES else set(BUILTIN_MODULES.values())
    if kind is not None and kind not in BUILTIN_MODULES and kind in REGISTRY:
        return  # a user's strategy, already registered
    for module in sorted(modules):
        importlib.import_module(f"workbench.strategies.{module}")


def validate(spec: Spec) -> tuple[type[Strategy], str, StrategyOptions]:
    """The class, name and validated config of ``spec`` and of the strategies nested in it, building nothing.

    What :func:`build` and the worker's start-up check share: no model loads, so a bad file fails in milliseconds.
    Raises ``KeyError`` for an unregistered kind and pydantic's ``ValidationError`` for a bad or unknown key.
    """
    if isinstance(spec, Path) or (isinstance(spec, str) and spec.endswith((".yaml", ".yml"))):
        spec = yaml.safe_load(Path(spec).read_text())
    config: dict[str, Any] = {"kind": spec} if isinstance(spec, str) else dict(spec)
    kind = config.pop("kind", None)
    _load_builtins(kind if isinstance(kind, str) else None)
    if kind not in REGISTRY:
        raise KeyError(f"strategy kind {kind!r} is not registered (have: {', '.join(sorted(REGISTRY))})")
    cls = REGISTRY[kind]
    name = str(config.pop("name", kind))
    cfg = cls.Config.model_validate(config)
    for nested in ("fallback", "inner"):
        if getattr(cfg, nested, None):
            validate(getattr(cfg, nested))
    return cls, name, cfg


def check_endpoint(spec: Spec, config: WorkbenchConfig) -> None:
    """Raise ``ConfigError`` if ``spec`` (or a strategy nested in it) names an endpoint ``config`` lacks, or puts
    a strategy that speaks the OpenAI API itself (AutoGen, AG2) on a factory endpoint: found before a run starts."""
    cls, name, cfg = validate(spec)
    try:
        endpoint = config.endpoint(cfg.endpoint)
    except KeyError as e:
        raise ConfigError(f"strategy {name!r}: {e.args[0]}") from None
    if cls.uses_endpoint and cls.openai_api and isinstance(endpoint, LLMFactory):
        raise ConfigError(
            f"strategy {name!r} ({cls.kind}) sends OpenAI API requests itself, and its endpoint "
            f"{cfg.endpoint or 'default'!r} is a factory ({endpoint.use}): give it an endpoint of kind 'local' or "
            "'openai' (`endpoint:` in the strategy)"
        )
    for nested in ("fallback", "inner"):
        if getattr(cfg, nested, None):
            check_endpoint(getattr(cfg, nested), config)


def with_knowledge(cfg: dict[str, Any], knowledge: Path | str) -> dict[str, Any]:
    """``cfg`` with every retrieval strategy in it (itself, its inner and fallback ones) that names no
    documents pointed at ``knowledge``: a suite's dataset, or the folder the outer strategy names."""
    _load_builtins()
    cfg = dict(cfg)
    cls = REGISTRY.get(cfg.get("kind", ""))
    if cls is not None and "knowledge" in cls.Config.model_fields and not cfg.get("knowledge"):  # type: ignore[attr-defined]
        cfg["knowledge"] = str(knowledge)
    for nested in ("inner", "fallback"):
        if isinstance(cfg.get(nested), str):
            cfg[nested] = with_knowledge({"kind": cfg[nested]}, knowledge)
        elif isinstance(cfg.get(nested), dict):
            cfg[nested] = with_knowledge(cfg[nested], knowledge)
    return cfg


def build(spec: Spec, stack: ModelStack | None = None) -> Strategy:
    """A strategy from a name, a config mapping, or a YAML file; fallbacks are built recursively and search
    the outer strategy's ``knowledge`` unless they name their own."""
    if isinstance(spec, Mapping) and spec.get("knowledge"):
        spec = with_knowledge(dict(spec), spec["knowledge"])
    cls, name, cfg = validate(spec)
    stack = stack or ModelStack()
    strategy = cls.from_config(cfg, stack)
    strategy.bind(cfg, stack, name=name, fallback=build(cfg.fallback, stack) if cfg.fallback else None)
    return strategy
