"""A run folder, ``<runs_dir>/<run-id>/``, and the one way to read it: :class:`RunFolder`.

The folder's layout is named here and nowhere else: the manifest (what ran, on what), the turn rows
(Parquet plus the journal of turns finished since the last compaction, written by
:mod:`workbench.core.store`), the stored scores (:mod:`workbench.scoring.persist`), the eval verdict
and the report. ``RunFolder.load(id).rows`` is the turn table with the stored scores overlaid. The user's
handle, :class:`workbench.Run`, is this class plus the verbs of the layers above (score, compare, report).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from workbench.core.config import load_config

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
R = TypeVar("R", bound="RunFolder")

MANIFEST_FILE = "manifest.json"
TURNS_FILE = "turns.parquet"
JOURNAL_FILE = "turns.jsonl"
SCORES_FILE = "scores.parquet"
SCORES_META = "scores.json"
VERDICT_FILE = "verdict.json"
REPORT_FILE = "report.html"
CALLS_DIR = "calls"
"""Stereo recordings of the voice conversations, one WAV per strategy x voice x conversation x repetition."""

RUNS_DIR_ENV = "WORKBENCH_RUNS_DIR"


def resolve_runs_dir(runs_dir: str | Path | None = None) -> Path:
    """The folder holding run folders, absolute: ``runs_dir`` when given, else ``$WORKBENCH_RUNS_DIR``,
    else the workbench config's ``runs_dir``. Relative paths are taken from the working directory now, so
    whatever was resolved keeps pointing at the same folder when the working directory changes later."""
    if runs_dir is None or str(runs_dir) == "":
        runs_dir = os.environ.get(RUNS_DIR_ENV) or None
    if runs_dir is None:
        # config.py is a leaf module (pydantic, yaml), imported on first need so `import workbench` stays cheap

        runs_dir = load_config().runs_dir
    return Path(runs_dir).expanduser().absolute()


def call_audio_file(strategy: str, voice: str, conversation_id: str, repetition: int) -> str:
    """Where a voice conversation's call recording goes, relative to the run folder (safe characters only)."""

    def safe(part: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", part).lstrip(".") or "_"

    return f"{CALLS_DIR}/{safe(strategy)}/{safe(voice)}/{safe(conversation_id)}.r{int(repetition)}.wav"


class RunFolder:
    """One run folder: its manifest, its turn table with the stored scores, and what to do with them.

    ``manifest`` is read once; ``rows`` is read on first use and again after :meth:`score`. Load a run
    again to see rows another process added since.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().absolute()
        self._rows: pd.DataFrame | None = None

    @classmethod
    def load(cls, run: str | Path, runs_dir: str | Path | None = None) -> Self:
        """A run by id (a folder in ``runs_dir``, see :func:`resolve_runs_dir`) or by the path of its folder."""
        p = Path(run)
        if (p / MANIFEST_FILE).exists():
            return cls(p)
        root = resolve_runs_dir(runs_dir)
        if (root / p / MANIFEST_FILE).exists():
            return cls(root / p)
        raise FileNotFoundError(f"no run {str(run)!r}: expected {root / p}/{MANIFEST_FILE}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.run_id!r}, status={self.status!r}, path={str(self.path)!r})"

    # -- what the folder holds ----------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.path.name)

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """What ran, on which stack and dataset, and how it ended (``status``)."""
        data = json.loads((self.path / MANIFEST_FILE).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{self.path / MANIFEST_FILE}: not a run manifest")
        return data

    @property
    def status(self) -> str | None:
        """``running``, ``complete`` or ``interrupted``."""
        return self.manifest.get("status")

    @property
    def dataset(self) -> Path | None:
        """The dataset folder the run replayed (recorded as an absolute path)."""
        d = self.manifest.get("dataset")
        return Path(d) if d else None

    @property
    def created_at(self) -> str:
        """ISO-8601 UTC start time (the manifest file's time for a manifest that does not say)."""
        stamp = self.manifest.get("created_at")
        if stamp:
            return str(stamp)
        return datetime.fromtimestamp((self.path / MANIFEST_FILE).stat().st_mtime, UTC).isoformat()

    @property
    def rows(self) -> pd.DataFrame:
        """The turn table (``workbench.core.schema.COLUMNS``), with the stored score columns overlaid."""
        if self._rows is None:
            self._rows = self._read_rows()
        return self._rows

    def _read_rows(self) -> pd.DataFrame:
        import pandas as pd

        # core.store imports this module (the file names), so its reader is imported on use
        from workbench.core.schema import KEY
        from workbench.core.store import read_rows

        df = read_rows(self.path)
        scores = self.path / SCORES_FILE
        if scores.exists() and not df.empty:
            extra = pd.read_parquet(scores)  # scored columns win over same-named turn columns (e.g. a re-computed wer)
            df = df.drop(columns=[c for c in extra.columns if c in df.columns and c not in KEY])
            df = df.merge(extra, on=list(KEY), how="left")
        return df

    @property
    def scoring(self) -> dict[str, Any]:
        """What each scorer added, or why it added nothing ({} for a run never scored)."""
        meta = self.path / SCORES_META
        if not meta.exists():
            return {}
        data = json.loads(meta.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}


def list_runs(
    runs_dir: str | Path | None = None,
    filter: Callable[[R], bool] | None = None,
    *,
    cls: type[R] = RunFolder,  # type: ignore[assignment]
) -> list[R]:
    """The runs in ``runs_dir`` (see :func:`resolve_runs_dir`), newest first; ``filter`` keeps those it accepts.

    A folder without a readable manifest is not a run and is skipped (with a warning when it has one).
    """
    root = resolve_runs_dir(runs_dir)
    if not root.is_dir():
        return []
    runs: list[R] = []
    for manifest in root.glob(f"*/{MANIFEST_FILE}"):
        run = cls(manifest.parent)
        try:
            run.manifest  # noqa: B018  (read now: an unreadable one is reported here, not at the caller)
        except (OSError, ValueError) as e:
            log.warning("skipping %s: unreadable manifest (%s)", run.path, e)
            continue
        if filter is None or filter(run):
            runs.append(run)
    return sorted(runs, key=lambda r: (r.created_at, r.path.name), reverse=True)


__all__ = [
    "CALLS_DIR",
    "JOURNAL_FILE",
    "MANIFEST_FILE",
    "REPORT_FILE",
    "RUNS_DIR_ENV",
    "SCORES_FILE",
    "SCORES_META",
    "TURNS_FILE",
    "VERDICT_FILE",
    "RunFolder",
    "call_audio_file",
    "list_runs",
    "resolve_runs_dir",
]
