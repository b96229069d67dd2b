"""DianaChat Workbench: compare LLM strategies for LiveKit voice agents.

``workbench.run(suite)`` replays a suite and ``workbench.load_run(run_id)`` returns its turn table.
"""

from typing import Any


def run(*args: Any, **kwargs: Any) -> Any:
    """Run a suite (see :func:`workbench.replay.run`); imported lazily so the CLI starts fast."""
    from workbench.replay import run as _run

    return _run(*args, **kwargs)


def load_run(*args: Any, **kwargs: Any) -> Any:
    """A run's turn table as a pandas DataFrame (see :func:`workbench.replay.load_run`)."""
    from workbench.replay import load_run as _load_run

    return _load_run(*args, **kwargs)
