"""Atomic file output: write to a temporary file beside the target, then rename.

A write that fails because the file system is full (or the user's quota there)
raises ``NoSpaceError``: an ``OSError`` whose message names the file, the space it
needed and the space that is free, so that a command can print it as one line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["NO_SPACE_ERRNOS", "NoSpaceError", "atomic_output", "default_mode", "no_space_error", "write_bytes"]

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
"""``errno`` values of a write that found no room: the device is full, or the user's quota on it."""


def _size_text(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1e3:.1f} kB"


class NoSpaceError(OSError):
    """A write that found no room (``errno`` of ``NO_SPACE_ERRNOS``); ``str()`` is one line made by ``no_space_error``.

    Constructed like ``OSError(errno, message, filename)``, so it pickles as one.
    """

    def __str__(self) -> str:
        return str(self.strerror)


def no_space_error(e: OSError, path: str | Path | None = None, needed: int | None = None) -> NoSpaceError:
    """``e`` as a ``NoSpaceError`` saying which file found no room, the space it needed (if known) and what is free."""
    if isinstance(e, NoSpaceError):
        return e
    path = Path(path if path is not None else e.filename or ".")
    try:
        free = f"{_size_text(shutil.disk_usage(path.parent).free)} free"
    except OSError:
        free = "free space unknown"
    reason = os.strerror(e.errno or errno.ENOSPC).lower()
    if needed is None:
        message = f"{reason} writing {path}, expected more free space in {path.parent} ({free})"
    else:
        size = _size_text(needed)
        message = f"{reason} writing {path} ({size}), expected at least {size} free in {path.parent} ({free})"
    return NoSpaceError(e.errno, message, str(path))


def default_mode(directory: bool = False) -> int:
    """The mode a plain ``open()`` (or ``mkdir``) would give under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextlib.contextmanager
def atomic_output(path: str | Path, *, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    ``mkstemp`` creates files readable by their owner only; the final file gets the
    usual mode instead. ``size`` (the bytes the caller writes, when known) goes into
    the message of the ``NoSpaceError`` raised for a full file system.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS:
            raise no_space_error(e, path, size) from None
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (``atomic_output``)."""
    with atomic_output(path, size=len(data)) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)
