"""DianaChat Workbench: compare LLM strategies for LiveKit voice agents.

``workbench.run(suite)`` replays a suite (in a script or a notebook cell alike), ``workbench.Run.load(run_id)``
opens a run (``.rows``, ``.manifest``, ``.score()``, ``.compare()``, ``.report()``), ``workbench.list_runs()``
lists them newest first, and ``workbench.load_run(run_id)`` returns a run's turn table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.core.run import Run as Run
    from workbench.core.run import list_runs as list_runs


def run(*args: Any, **kwargs: Any) -> Any:
    """Run a suite (see :func:`workbench.replay.run`); imported lazily so the CLI starts fast."""
    from workbench.replay import run as _run

    return _run(*args, **kwargs)


def load_run(*args: Any, **kwargs: Any) -> Any:
    """A run's turn table as a pandas DataFrame, scores included (``Run.load(run_id).rows``)."""
    from workbench.core.run import Run

    return Run.load(*args, **kwargs).rows


def __getattr__(name: str) -> Any:
    """``Run`` and ``list_runs``, imported on first use like the functions above."""
    if name in ("Run", "list_runs"):
        from workbench.core import run as _run_module

        return getattr(_run_module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Run", "list_runs", "load_run", "run"]
