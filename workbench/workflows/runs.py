"""``workbench.Run``: a run folder with what a user does with it (score, compare, report).

The folder and its reading are :class:`workbench.core.run.RunFolder`, which every layer uses; the verbs
live here, above the scoring and analysis layers they call, so no layer imports upward.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.analysis.compare import Comparison, compare
from workbench.analysis.report import build_report
from workbench.core import run as folders
from workbench.core.run import RunFolder
from workbench.scoring.persist import score_run_folder


class Run(RunFolder):
    """One run: ``manifest``, ``rows`` (turns with stored scores), :meth:`score`, :meth:`compare`, :meth:`report`."""

    def score(self, scorers: list[str] | None = None, **kwargs: Any) -> Run:
        """Score the run and store the columns beside it (``workbench score``); returns the run, rows refreshed.

        ``scorers``: names (default: every registered one); ``kwargs``: ``judge_endpoint``, ``config_path``,
        ``stack`` (see :func:`workbench.scoring.persist.score_run_folder`).
        """
        score_run_folder(self.path, scorers, **kwargs)
        self._rows = None
        return self

    def compare(self, **kwargs: Any) -> Comparison:
        """:func:`workbench.analysis.compare.compare` on :attr:`rows`; the baseline defaults to the suite's."""
        kwargs.setdefault("baseline", (self.manifest.get("suite") or {}).get("baseline", "plain"))
        return compare(self.rows, **kwargs)

    def report(self, **kwargs: Any) -> Path:
        """Write the HTML report (default ``<run>/report.html``) and return its path; ``vs`` may be a Run."""
        if isinstance(kwargs.get("vs"), RunFolder):
            kwargs["vs"] = kwargs["vs"].path
        return build_report(self.path, **kwargs)


def list_runs(runs_dir: str | Path | None = None, filter: Callable[[Run], bool] | None = None) -> list[Run]:
    """The runs in ``runs_dir`` (see :func:`workbench.core.run.resolve_runs_dir`), newest first; ``filter``
    keeps those it accepts. A folder without a readable manifest is skipped (with a warning when it has one)."""
    return folders.list_runs(runs_dir, filter, cls=Run)


__all__ = ["Run", "list_runs"]
