"""Every file the workbench writes goes through here: atomically, and durably once the call returns.

The content goes to a temporary file in the target's folder, which is flushed and fsynced, renamed over
the target, and the folder fsynced: a crash at any instant leaves the old file or the new one, never half
of one, and a returned write survives a power cut. Readers ignore the hidden ``.NAME.*.tmp`` files a
killed writer leaves behind.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePath
from typing import IO, Any


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file that replaces ``path`` when the block ends without an error (for writers that want a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        # O_EXCL: two writers of one file never share a temporary; 0o666 lets the umask decide, as open() does
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (the folder entry, not only the file's blocks)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a folder that cannot be opened for reading (some network mounts): the rename is done anyway
    try:
        with contextlib.suppress(OSError):  # filesystems without folder fsync answer EINVAL
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` with ``data``; see the module docstring for what a crash leaves."""
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Replace ``path`` with ``text``."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, value: Any, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Replace ``path`` with ``value`` as JSON (through :func:`jsonable`, so NaN is null and numpy is plain)."""
    return atomic_write_text(path, json.dumps(jsonable(value), indent=indent, sort_keys=sort_keys, default=str))


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON/YAML types: numpy scalars and arrays as Python values, NaN as None, paths as
    strings, mappings (string keys) and lists/tuples converted item by item; anything else unchanged."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):  # numpy scalar or array
        return jsonable(value.tolist())
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


__all__ = ["atomic_file", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "jsonable"]
