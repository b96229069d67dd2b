"""Durable run folders: ``runs/<run-id>/`` with a manifest and turn rows that survive a crash.

Each finished turn is appended to a journal (one JSON line, flushed) the moment it finishes, and
the journal is compacted into Parquet atomically (:mod:`workbench.core.io`), so a run killed at
any instant leaves either the old or the new Parquet, never half of one. Readers
merge Parquet and journal and keep the last row per key, so a resumed run has exactly the rows an
uninterrupted run has. One process writes a run at a time (an OS file lock). The folder's file
names and the reader (:class:`workbench.core.run.RunFolder`) are in :mod:`workbench.core.run`.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.core.io import atomic_file, atomic_write_json, jsonable
from workbench.core.run import JOURNAL_FILE, MANIFEST_FILE, TURNS_FILE, RunFolder
from workbench.core.schema import COLUMNS, KEY


class RunLockedError(RuntimeError):
    """Another process is writing this run folder."""


def new_run_id(name: str = "run") -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{name}-{uuid.uuid4().hex[:6]}"


def resolve_run(run: str | Path, runs_dir: str | Path | None = None) -> Path:
    """A run id (under ``runs_dir``) or a path to a run folder: :meth:`workbench.core.run.RunFolder.load`'s folder."""
    return RunFolder.load(run, runs_dir).path


def typed_frame(rows: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Rows as a DataFrame with every schema column present and typed (extra columns kept).

    Built column by column into one new frame: assigning typed columns into a frame one at a time
    costs ~10 ms even for an empty run, and this runs at every start, compaction and load.
    """
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    cols: dict[str, pd.Series] = {}
    for col, (dtype, _) in COLUMNS.items():
        series = df[col] if col in df.columns else pd.Series([None] * len(df), index=df.index, dtype="object")
        if dtype != "object" and str(series.dtype) != dtype:
            try:
                series = series.astype(dtype)
            except (TypeError, ValueError):
                if dtype.startswith(("float", "int")):
                    series = pd.to_numeric(series, errors="coerce")
        cols[col] = series
    for col in df.columns:
        if col not in COLUMNS:
            cols[col] = df[col]
    return pd.DataFrame(cols, index=df.index)


class RunStore:
    """One run folder, opened for writing by exactly one process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.path / ".lock", "a+")  # noqa: SIM115  (held for the store's lifetime)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "another process"
            self._lock_file.close()
            raise RunLockedError(
                f"run {self.path.name} is being written by {holder}; wait for it or use another run id"
            ) from None
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(f"pid {os.getpid()} on {platform.node()}")
        self._lock_file.flush()
        _end_torn_line(self.path / JOURNAL_FILE)
        self._journal = open(self.path / JOURNAL_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self._mutex = threading.Lock()

    # -- manifest -------------------------------------------------------------------
    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.path / MANIFEST_FILE, manifest)

    def read_manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST_FILE).read_text())

    def update_manifest(self, **changes: Any) -> None:
        m = self.read_manifest()
        m.update(changes)
        self.write_manifest(m)

    # -- rows -----------------------------------------------------------------------
    def append(self, row: dict[str, Any]) -> None:
        """Durable as soon as it returns (the OS has the line even if this process is killed)."""
        line = json.dumps(jsonable(row), default=str)
        with self._mutex:
            self._journal.write(line + "\n")
            self._journal.flush()

    def compact(self) -> int:
        """Fold the journal into the Parquet file atomically, then empty the journal; returns the row count."""
        with self._mutex:
            self._journal.flush()
            df = read_rows(self.path)
            if not df.empty:
                with atomic_file(self.path / TURNS_FILE) as f:
                    df.to_parquet(f, index=False)
            self._journal.truncate(0)
            self._journal.seek(0)
            return len(df)

    def close(self) -> None:
        self._journal.close()
        self._lock_file.close()


def _end_torn_line(journal: Path) -> None:
    """Close a line a killed writer left unfinished, so the next row is not glued onto it (and lost with it)."""
    try:
        with open(journal, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    f.write(b"\n")
    except FileNotFoundError:
        pass


def _read_journal(path: Path) -> list[dict[str, Any]]:
    rows = []
    if not path.exists():
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the last line of a killed writer may be cut: that turn is simply redone
    return rows


def read_rows(path: Path) -> pd.DataFrame:
    """Parquet plus journal, last row per key wins, in a stable order."""
    frames = []
    pq = path / TURNS_FILE
    if pq.exists():
        frames.append(pd.read_parquet(pq))
    journal = _read_journal(path / JOURNAL_FILE)
    if journal:
        frames.append(typed_frame(journal))  # typed before the concat, so Parquet and journal columns agree
    nonempty = [f for f in frames if not f.empty]
    if not nonempty:
        return typed_frame([])
    df = pd.concat(nonempty, ignore_index=True) if len(nonempty) > 1 else nonempty[0]
    df = df.drop_duplicates(subset=list(KEY), keep="last")
    return typed_frame(df).sort_values(list(KEY), kind="stable").reset_index(drop=True)


def load_run(run: str | Path, runs_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per strategy x conversation x turn x repetition, scores included: ``RunFolder.load(run).rows``."""
    return RunFolder.load(run, runs_dir).rows
