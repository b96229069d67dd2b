"""Your own agent: a factory that returns a LiveKit ``Agent``, replayed (and served) with the strategy as its LLM.

A suite names it in ``agent:`` and a promoted file in ``agent.factory``, in one of three forms::

    agent: my_agent:build                       # an importable module and a callable in it
    agent: agents/clinic.py:build               # a Python file (relative to the suite file) and a callable
    agent: {use: my_agent:build, tone: formal}  # either, with keyword arguments for the call

The callable (a function, or an ``Agent`` subclass itself) returns an ``Agent`` with its own instructions,
tools and overridden nodes (``llm_node``, ``tts_node``, ...). The harness and the worker then put it in the
session :func:`workbench.pipeline.build_session` builds: the strategy under test is the session's LLM and
the speech-text clean-up is the session's ``tts_text_transforms``, so your agent gets both without
subclassing anything of ours. An agent that brings its own ``llm=`` is refused (see :func:`make_user_agent`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from livekit.agents import Agent, llm
from livekit.agents.utils import is_given
from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator


class AgentFactoryError(ValueError):
    """A factory that cannot be loaded or called, or does not return a usable ``Agent``; the message says which."""


class AgentFactory(BaseModel):
    """``use`` (``"module:function"`` or ``"path/to/file.py:function"``) and the keyword ``args`` to call it with.

    Written as a string, or a mapping with ``use`` and the keyword arguments beside it; it is dumped back in
    that same written form, so a run's manifest and a promoted file hold the spec as the suite wrote it.
    """

    model_config = ConfigDict(extra="forbid")

    use: str
    args: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _written_form(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"use": data}
        if isinstance(data, dict):
            if "use" not in data:
                raise ValueError("a mapping needs 'use: module:function' (or 'use: path/to/file.py:function')")
            if set(data) <= {"use", "args"} and isinstance(data.get("args", {}), dict):
                return data  # this model's own shape (built in Python, or a keyword argument named "args")
            return {"use": data["use"], "args": {k: v for k, v in data.items() if k != "use"}}
        return data

    @model_validator(mode="after")
    def _valid_use(self) -> AgentFactory:
        target, sep, attr = self.use.rpartition(":")
        if not sep or not target.strip() or not attr.strip():
            raise ValueError(f"{self.use!r}: expected 'module:function' or 'path/to/file.py:function'")
        return self

    @model_serializer(mode="plain")
    def _as_written(self) -> str | dict[str, Any]:
        if not self.args:
            return self.use
        # a keyword argument named "args" stays nested, so the mapping reads back as the same factory
        return {"use": self.use, "args": dict(self.args)} if "args" in self.args else {"use": self.use, **self.args}

    @property
    def target(self) -> str:
        """The module name or file path before the last ``:``."""
        return self.use.rpartition(":")[0]

    @property
    def attr(self) -> str:
        """The callable's name after the last ``:`` (dotted for an attribute of an attribute)."""
        return self.use.rpartition(":")[2]

    @property
    def is_file(self) -> bool:
        """A file path (``.py``, or a path with a folder), not a module name."""
        t = self.target
        return t.endswith(".py") or "/" in t or os.sep in t

    def with_target(self, target: str) -> AgentFactory:
        """The same factory with its module or file path replaced (a file path resolved or made portable)."""
        return AgentFactory(use=f"{target}:{self.attr}", args=dict(self.args))


def as_factory(spec: AgentFactory | str | dict[str, Any]) -> AgentFactory:
    if isinstance(spec, AgentFactory):
        return spec
    try:
        return AgentFactory.model_validate(spec)
    except ValueError as e:
        raise AgentFactoryError(f"{spec!r}: {_first_error(e)}") from e


def _first_error(e: ValueError) -> str:
    errors = getattr(e, "errors", None)
    if callable(errors):
        first = errors()[0]
        return str(first.get("msg", e)).removeprefix("Value error, ")
    return str(e)


def _load_file(path: Path, use: str) -> Any:
    """The module of a factory file, executed once per file version and kept in ``sys.modules``."""
    if not path.is_file():
        raise AgentFactoryError(f"{use!r}: no file {path}")
    resolved = path.resolve()
    name = f"_workbench_agent_{resolved.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:10]}"
    mtime = resolved.stat().st_mtime_ns
    cached = sys.modules.get(name)
    if cached is not None and getattr(cached, "__workbench_mtime__", None) == mtime:
        return cached
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise AgentFactoryError(f"{use!r}: {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    module.__workbench_mtime__ = mtime  # type: ignore[attr-defined]
    sys.modules[name] = module  # before running it: dataclasses, pydantic and tools resolve names through it
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise AgentFactoryError(f"{use!r}: running {path} failed: {type(e).__name__}: {e}") from e
    return module


def _load_module(name: str, use: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise AgentFactoryError(
                f"{use!r}: no module named {name!r} (is it on the Python path? a file is written "
                "'path/to/file.py:function')"
            ) from e
        raise AgentFactoryError(f"{use!r}: importing {name!r} failed: {type(e).__name__}: {e}") from e
    except Exception as e:
        raise AgentFactoryError(f"{use!r}: importing {name!r} failed: {type(e).__name__}: {e}") from e


def load_agent_factory(spec: AgentFactory | str | dict[str, Any]) -> Callable[..., Any]:
    """The callable ``spec`` names (a relative file path is taken from the working directory).

    Raises :class:`AgentFactoryError` when the module or file is missing or fails to import, or the name
    is missing or not callable. Calling it is :func:`make_user_agent`'s job.
    """
    f = as_factory(spec)
    module = _load_file(Path(f.target), f.use) if f.is_file else _load_module(f.target, f.use)
    obj: Any = module
    for part in f.attr.split("."):
        if not hasattr(obj, part):
            where = f.target if f.is_file else f"module {f.target!r}"
            raise AgentFactoryError(f"{f.use!r}: {where} has no {f.attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise AgentFactoryError(f"{f.use!r}: {f.attr!r} is a {type(obj).__name__}, not a callable")
    return obj


def _accepts_chat_ctx(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    p = params.get("chat_ctx")
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def _call(factory: AgentFactory, chat_ctx: llm.ChatContext | None) -> tuple[Agent, bool]:
    fn = load_agent_factory(factory)
    kwargs = dict(factory.args)
    took_ctx = chat_ctx is not None and _accepts_chat_ctx(fn)
    if took_ctx:
        kwargs["chat_ctx"] = chat_ctx
    try:
        agent = fn(**kwargs)
    except Exception as e:
        raise AgentFactoryError(f"{factory.use!r} raised {type(e).__name__}: {e}") from e
    if inspect.isawaitable(agent):
        if inspect.iscoroutine(agent):
            agent.close()
        raise AgentFactoryError(f"{factory.use!r} returned an awaitable: a factory is a plain (not async) callable")
    if not isinstance(agent, Agent):
        raise AgentFactoryError(f"{factory.use!r} returned a {type(agent).__name__}, not a livekit.agents.Agent")
    if is_given(agent.llm):
        raise AgentFactoryError(
            f"{factory.use!r} returned an agent with its own llm= ({type(agent.llm).__name__}): the strategy "
            "under test is the session's LLM, so the agent must not set one (drop llm= from the Agent)"
        )
    return agent, took_ctx


def make_user_agent(factory: AgentFactory | str | dict[str, Any]) -> Agent:
    """A fresh agent from ``factory`` (its ``args`` as keyword arguments), for a call without history.

    Refused with :class:`AgentFactoryError`: a factory that cannot be loaded, raises, returns anything but a
    ``livekit.agents.Agent``, or returns one with its own ``llm=``. An agent's LLM would override the
    session's, and the session's LLM is the strategy under test, so it is refused rather than silently
    cleared (which would serve something other than the agent as written).
    """
    agent, _ = _call(as_factory(factory), None)
    return agent


async def build_user_agent(
    factory: AgentFactory | str | dict[str, Any], *, chat_ctx: llm.ChatContext | None = None
) -> Agent:
    """:func:`make_user_agent`, carrying on from ``chat_ctx`` (a resumed conversation's history).

    A factory with a ``chat_ctx`` parameter gets the history as that argument; otherwise the history is
    added after whatever the factory put in the agent's own chat context (``Agent.update_chat_ctx``).
    """
    agent, took_ctx = _call(as_factory(factory), chat_ctx)
    if chat_ctx is not None and not took_ctx:
        own = list(agent.chat_ctx.items)
        await agent.update_chat_ctx(llm.ChatContext(items=[*own, *chat_ctx.items]))
    return agent
