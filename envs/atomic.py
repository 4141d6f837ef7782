"""Atomic file writes: a reader sees the old file or the new one, never a truncated mix.

Every file the project writes (schedules, sweep items, configs, datasets, models, results) goes
through this module. Each write goes to a hidden temp file in the target's folder, is flushed and
``fsync``-ed, given the permissions a plain ``open(path, "w")`` would give (``0o666 & ~umask``, e.g.
0644 — ``tempfile`` alone creates 0600), and then renamed over the target with :func:`os.replace`,
which is atomic on POSIX and Windows when both paths are on one file system. A failure at any point
(full disk, Ctrl-C, a serialiser that raises) leaves the previous file untouched and no temp file.

It lives in ``envs`` so that ``envs``, ``oracle`` and ``agents`` can all import it (``envs`` imports
neither of the others); it needs only the standard library.

    atomic_write_json("runs/x/config.json", {"seed": 0})
    with atomic_path("runs/x/model.safetensors") as tmp:  # for libraries that write to a path
        save_file(tensors, tmp)
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "default_mode"]

_UMASK_LOCK = threading.Lock()


def default_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: ``0o666 & ~umask`` (0644 with umask 022).

    The umask can only be read by setting it, so it is set and restored under a lock.
    """
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where folders cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], mode: int | None = None) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on a clean exit it replaces ``path`` atomically.

    For writers that take a file name (``np.savez``, ``safetensors.save_file``, ``zipfile``). The
    temp name keeps ``path``'s suffix (some writers append one otherwise). On an exception the temp
    file is removed and ``path`` is left as it was. ``mode`` defaults to :func:`default_mode`.
    """
    target = Path(path)
    folder = target.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, default_mode() if mode is None else mode)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(folder)


def _write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None], mode: int | None) -> Path:
    with atomic_path(path, mode) as tmp, open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring). Returns the path."""
    return _write(path, lambda fh: fh.write(data), mode)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", mode: int | None = None
) -> Path:
    """Write ``text`` to ``path`` atomically, encoded with ``encoding``. Returns the path."""
    return atomic_write_bytes(path, text.encode(encoding), mode=mode)


def atomic_write_json(
    path: str | os.PathLike[str], obj: Any, *, indent: int | None = 1, mode: int | None = None, **dumps: Any
) -> Path:
    """Serialise ``obj`` with :func:`json.dumps` (extra keyword arguments go to it) and write it
    atomically. The text is built before the file is touched, so a value that cannot be serialised
    raises without creating anything."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, **dumps), mode=mode)
