"""DianaChat Workbench: compare LLM strategies for LiveKit voice agents.

``workbench.run(suite)`` replays a suite (in a script or a notebook cell alike; ``await workbench.arun(suite)``
too), ``workbench.Run.load(run_id)`` opens a run (``.rows``, ``.manifest``, ``.score()``, ``.compare()``,
``.report()``), ``workbench.list_runs()`` lists them newest first, and ``workbench.load_run(run_id)`` returns a
run's turn table. Names are imported on first use, so ``import workbench`` (and the CLI) starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.workflows import Suite as Suite
    from workbench.workflows import arun as arun
    from workbench.workflows import load_suite as load_suite
    from workbench.workflows.runs import Run as Run
    from workbench.workflows.runs import list_runs as list_runs


def run(*args: Any, **kwargs: Any) -> Any:
    """Run a suite (see :func:`workbench.workflows.runner.run`)."""
    from workbench.workflows import run as _run

    return _run(*args, **kwargs)


def load_run(*args: Any, **kwargs: Any) -> Any:
    """A run's turn table as a pandas DataFrame, scores included (``Run.load(run_id).rows``)."""
    from workbench.core.run import RunFolder

    return RunFolder.load(*args, **kwargs).rows


_LAZY = {
    "Run": "workbench.workflows.runs",
    "list_runs": "workbench.workflows.runs",
    "Suite": "workbench.workflows",
    "arun": "workbench.workflows",
    "load_suite": "workbench.workflows",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Run", "Suite", "arun", "list_runs", "load_run", "load_suite", "run"]
