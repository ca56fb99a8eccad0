"""The run's output folder: locked while a run works on it, replaced only by a complete run, and only over files it can prove it wrote.

Beside ``--out`` (``<parent>/.<name>.*``) a run keeps:

- ``.<name>.lock``: an exclusive ``flock`` held for the whole run, so a second run
  into the same ``--out`` fails at once instead of at commit time. It holds the
  owner's PID for the error message and is removed when the run ends.
- ``.<name>.staging-<pid>-<random>``: where the run writes; ``commit()`` writes
  ``manifest.json`` into it last (every file's relative path, size and SHA-256) and
  swaps it in for ``--out``.
- ``.<name>.previous-<pid>-<random>``: the earlier run during the swap, deleted file
  by file against its manifest once the new run is in place.

``--force`` replaces a folder only when its ``manifest.json`` lists every file and
folder in it with the same size and hash: a folder holding anything else (a user's
file, a modified output, no manifest at all) is refused and left untouched.

Whoever holds the lock knows that no other run is using the staging and previous
folders of that ``--out``, so ``recover()`` removes (or, for an earlier run killed
in the middle of the swap, restores) what a killed run left behind, and says so.
The swap itself runs with SIGINT and SIGTERM deferred, so a signal leaves the old
run or the new one in place, never neither.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

from export.atomic import default_mode
from pipeline.errors import UserError
from pipeline.interrupts import raise_if_interrupted

__all__ = [
    "MANIFEST",
    "MANIFEST_FORMAT",
    "OutputFolder",
    "first_unproven",
    "pid_alive",
    "read_manifest",
    "signals_deferred",
    "write_manifest",
]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "acl-deploy/manifest/1"
_CHUNK = 1 << 20


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: Path) -> Path:
    """Write ``folder/manifest.json`` listing every file (path, size, SHA-256) and folder under ``folder``.

    Raises:
        ValueError: ``folder`` holds something other than files and folders (a symbolic link).
    """
    files, dirs = [], []
    for rel, entry in _walk(folder):
        if entry.is_dir(follow_symlinks=False):
            dirs.append(rel)
        elif entry.is_file(follow_symlinks=False):
            files.append({"path": rel, "size": entry.stat(follow_symlinks=False).st_size, "sha256": _sha256(entry)})
        else:  # nothing the job writes; a link would make the manifest vouch for a file outside the folder
            raise ValueError(f"{folder / rel} is not a regular file or folder")
    path = Path(folder) / MANIFEST
    path.write_text(json.dumps({"format": MANIFEST_FORMAT, "files": files, "dirs": dirs}, indent=1) + "\n")
    return path


def read_manifest(folder: Path) -> tuple[dict[str, tuple[int, str]], set[str]] | None:
    """``({path: (size, sha256)}, {dir})`` from ``folder/manifest.json``, or None if it is missing or not ours."""
    path = Path(folder) / MANIFEST
    try:
        if path.is_symlink() or not path.is_file():
            return None
        doc = json.loads(path.read_text())
        if doc.get("format") != MANIFEST_FORMAT:
            return None
        files = {e["path"]: (int(e["size"]), str(e["sha256"])) for e in doc["files"]}
        dirs = set(doc["dirs"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if not all(isinstance(p, str) and _inside(p) for p in (*files, *dirs)):
        return None  # a manifest must never name a path outside its folder
    return files, dirs


def _inside(rel: str) -> bool:
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts) and rel != MANIFEST


def _walk(folder: Path, rel: str = "") -> Iterator[tuple[str, os.DirEntry]]:
    """Depth-first, sorted by name (so "the first offending file" is the same every time); the manifest skipped."""
    with os.scandir(Path(folder) / rel if rel else folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        r = f"{rel}{entry.name}"
        if r == MANIFEST:
            continue
        yield r, entry
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(folder, r + "/")


def first_unproven(folder: Path) -> str | None:
    """Why ``folder`` is not exactly what a run wrote (naming the first offending file), or None if it is."""
    manifest = read_manifest(folder)
    if manifest is None:
        return f"holds no readable {MANIFEST}, so it is not an earlier acl-deploy run"
    files, dirs = manifest
    for rel, entry in _walk(folder):
        if entry.is_dir(follow_symlinks=False):
            if rel not in dirs:
                return f"holds {rel}/, which its {MANIFEST} does not list"
        elif entry.is_file(follow_symlinks=False) and rel in files:
            size, sha = files[rel]
            if entry.stat(follow_symlinks=False).st_size != size or _sha256(Path(entry.path)) != sha:
                return f"holds {rel}, which was modified after acl-deploy wrote it ({MANIFEST} has another size or SHA-256)"
        else:
            return f"holds {rel}, which its {MANIFEST} does not list"
    return None


def _remove_written(folder: Path) -> str | None:
    """Delete what ``folder``'s manifest proves we wrote, then the folder; returns what was kept and why, or None.

    Each file's hash is checked again just before it is unlinked: whatever does not
    match stays, and so do the folders holding it.
    """
    manifest = read_manifest(folder)
    files, dirs = manifest if manifest is not None else ({}, set())
    kept = None
    for rel, (size, sha) in sorted(files.items()):
        p = folder / rel
        try:
            if p.is_symlink() or not p.is_file():
                continue
            if p.stat().st_size == size and _sha256(p) == sha:
                p.unlink()
            else:
                kept = kept or f"{rel} differs from {MANIFEST}"
        except OSError as e:
            kept = kept or f"{rel}: {e.strerror}"
    for rel in sorted(dirs, key=lambda d: d.count("/"), reverse=True):
        with contextlib.suppress(OSError):  # a folder that is not empty holds something unproven: it stays
            (folder / rel).rmdir()
    if manifest is not None and kept is None:
        with contextlib.suppress(OSError):
            (folder / MANIFEST).unlink()  # last: a half-deleted folder stays provable
    try:
        folder.rmdir()
    except FileNotFoundError:
        pass
    except OSError as e:
        leftover = next((rel for rel, _ in _walk(folder)), None) if e.errno == errno.ENOTEMPTY else None
        return kept or (f"{leftover} is not in its {MANIFEST}" if leftover else e.strerror)
    return None


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done, then reach the handlers they would have reached.

    Blocking the signal with ``pthread_sigmask`` would not do: Python runs its
    handlers in the main thread whichever thread the kernel picks, and torch and
    ONNX Runtime keep threads of their own.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if handler is not None:  # None: installed outside Python, which cannot be restored
            previous[sig] = handler
            signal.signal(sig, lambda n, _f: pending.append(n))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            signal.raise_signal(pending[0])


def pid_alive(pid: int) -> bool:
    """Another process ``pid`` runs (this very process counts as not: nothing of ours is in use elsewhere)."""
    if pid == os.getpid():
        return False  # our lock is held by this very process: nothing of ours is in use elsewhere
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputFolder:
    """``--out``, its lock and its staging folder.

    ``locked()`` holds the lock (and recovers a killed run's leftovers), ``open()``
    creates the staging folder, ``commit()`` swaps it in, ``discard()`` removes it.
    A non-empty ``out`` is refused unless ``force``, and even with ``force`` unless
    its manifest proves that every file in it is an earlier run's output, as written.
    """

    def __init__(self, out: Path, force: bool, log: Callable[[str], None] = _stderr) -> None:
        self.out = Path(out)
        # Resolved once: commit() moves the earlier --out aside, and with it the process's current folder,
        # after which a relative --out (``.``) would name the moved folder.
        self._path = self.out.resolve()
        self.force = force
        self.log = log
        self.staging: Path | None = None
        self._lock_fd: int | None = None

    @property
    def path(self) -> Path:
        """``out`` as an absolute path without ``..``: ``--out .`` or ``--out ../x`` name real folders to move."""
        return self._path

    @property
    def parent(self) -> Path:
        return self.path.parent

    @property
    def lock_path(self) -> Path:
        return self.parent / f".{self.path.name}.lock"

    def _prefix(self, kind: str) -> str:
        return f".{self.path.name}.{kind}-"

    def _check_place(self) -> None:
        out = self.out
        if out.is_symlink():
            raise UserError(f"--out {out} is a symbolic link, expected a folder or a path that does not exist yet")
        if self.path.exists() and not self.path.is_dir():
            raise UserError(
                f"--out {out} exists and is not a folder, expected a folder or a path that does not exist yet"
            )
        probe = self.parent
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise UserError(f"--out {out}: {probe} is not a folder, expected a path whose parent folders are folders")
        if not os.access(probe, os.W_OK):
            raise UserError(f"--out {out}: cannot write in {probe}, expected a folder this user can write in")

    def check(self) -> None:
        """Refuse an ``out`` this run may not replace (one line, naming the first offending file)."""
        self._check_place()
        out = self.out
        # The folder commit() replaces: `x/missing/..` is x once `missing` is made, though it does not exist now.
        if self.path.is_dir() and any(self.path.iterdir()):
            if not self.force:
                raise UserError(
                    f"--out {out} is not empty, expected a new or empty folder; "
                    "pass --force to replace an earlier run's outputs"
                )
            why = first_unproven(self.path)
            if why is not None:
                raise UserError(
                    f"--out {out} {why}; refusing to replace it even with --force, "
                    f"expected only the files an earlier run wrote (remove or move the folder yourself)"
                )

    @contextlib.contextmanager
    def locked(self) -> Iterator[OutputFolder]:
        self.lock()
        try:
            self.recover()
            yield self
        finally:
            self.unlock()

    def lock(self) -> None:
        """Take the exclusive lock beside ``out``; another run holding it is a ``UserError``."""
        if self._lock_fd is not None:
            return
        self._check_place()
        path = self.lock_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.read(fd, 32).decode(errors="replace").strip()
                    os.close(fd)
                    who = f"process {holder}" if holder.isdigit() else "another process"
                    raise UserError(
                        f"--out {self.out} is in use by another run ({who}, lock {path}), "
                        "expected one run at a time per output folder"
                    ) from None
                # The previous holder unlinks the file before unlocking it: if it did so after our open(), our
                # lock is on a file nobody else will open, so try again with the path's current file.
                try:
                    st, now = os.fstat(fd), os.stat(path)
                    if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                        break
                except FileNotFoundError:
                    pass
                os.close(fd)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as e:
            raise UserError(f"--out {self.out}: cannot create its lock file {path} ({e.strerror})") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.lock_path.unlink()  # while still locked, so no other run can hold a lock on the unlinked file
        os.close(self._lock_fd)
        self._lock_fd = None

    def recover(self) -> None:
        """Remove, or restore, what killed runs left beside ``out``; every action is logged.

        Only with the lock held: then no run is using these folders. A folder named
        after a process that is still alive (a run of an older version, without the
        lock) is reported and left alone.
        """
        assert self._lock_fd is not None, "recover() needs the lock"
        parent = self.parent
        if not parent.is_dir():
            return
        name = re.escape(self.path.name)
        # <pid>-<mkdtemp's random part>: another --out whose name starts like ours never matches.
        ours = re.compile(rf"\.{name}\.(previous|staging)-(\d+)-[a-z0-9_]+")
        older = re.compile(rf"\.{name}\.(previous|staging)-[a-z0-9_]{{8}}")  # before the lock: no PID in the name
        found = []
        for p in sorted(parent.iterdir()):
            m = ours.fullmatch(p.name)
            if m and p.is_dir() and not p.is_symlink():
                found.append((m.group(1), int(m.group(2)), p))
            elif older.fullmatch(p.name) and p.is_dir():
                self.log(
                    f"      left {p} in place: an older acl-deploy's, which cannot tell whether a run still uses it; "
                    "remove it yourself once none does"
                )
        for kind, pid, p in sorted(found, key=lambda f: f[0]):  # "previous" first: a restore needs --out free
            if pid_alive(pid):
                self.log(f"      left {p} in place: process {pid}, which may have written it, is still running")
            elif kind == "previous":
                self._recover_previous(p)
            else:
                try:
                    shutil.rmtree(p)
                    self.log(f"      removed {p}: the unfinished outputs of a run that was killed")
                except OSError as e:
                    self.log(f"      warning: could not remove {p}, left by a killed run ({e.strerror})")

    def _recover_previous(self, p: Path) -> None:
        if not os.path.lexists(self.path) and read_manifest(p) is not None and first_unproven(p) is None:
            # Killed between moving the earlier run aside and moving the new one in: the earlier run comes back.
            os.replace(p, self.path)
            self.log(f"      restored {self.out} from {p}: a run was killed while replacing it")
            return
        kept = _remove_written(p)
        if kept is None:
            self.log(
                f"      removed {p}: an earlier run's outputs, replaced by a run that was killed while deleting them"
            )
        else:
            self.log(f"      warning: kept {p}, left by a killed run: {kept}")

    def open(self) -> Path:
        self.check()
        parent = self.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.staging = Path(tempfile.mkdtemp(prefix=f"{self._prefix('staging')}{os.getpid()}-", dir=parent))
            os.chmod(self.staging, default_mode(directory=True))
        except OSError as e:
            raise UserError(f"--out {self.out}: cannot create a folder beside it ({e.strerror})") from None
        return self.staging

    def commit(self) -> Path:
        """Write the manifest, then swap the staging folder in; the earlier run is deleted by its manifest.

        Never after a SIGINT or SIGTERM whose exception a library swallowed: that raises ``Terminated`` here.
        """
        assert self.staging is not None
        raise_if_interrupted()
        write_manifest(self.staging)
        self.check()  # a user may have put files into --out since open(); they are never deleted
        with signals_deferred():
            backup = None
            if os.path.lexists(self.path):
                backup = Path(tempfile.mkdtemp(prefix=f"{self._prefix('previous')}{os.getpid()}-", dir=self.parent))
                backup.rmdir()
                os.replace(self.path, backup)
            try:
                os.replace(self.staging, self.path)
            except OSError:
                if backup is not None:
                    os.replace(backup, self.path)
                raise
            self.staging = None
            if backup is not None:
                kept = _remove_written(backup)
                if kept is not None:
                    self.log(f"      warning: kept {backup} (the earlier run's folder): {kept}")
        return self.out

    def discard(self) -> None:
        if self.staging is None:
            return
        try:
            shutil.rmtree(self.staging)
        except OSError as e:
            self.log(
                f"      warning: could not remove {self.staging} ({e.strerror}); the next run into --out removes it"
            )
        self.staging = None
