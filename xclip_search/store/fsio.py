"""Durable file publishing and the index's writer lock.

Every published file is written to a temporary name in its final directory, fsynced, renamed over its final
name and the directory fsynced, so a reader sees the old file or the new one and a crash leaves at most a
temporary file that the next writer removes. `crash_point` lets the reliability tests kill the process at any
named step of the commit protocol (``XCLIP_SEARCH_CRASH_AT=step`` or ``step:N`` for the N-th time), or stop it
there until a signal comes (``XCLIP_SEARCH_PAUSE_AT``, same form): it says ``paused at STEP`` on stderr, so a
test interrupts the run at a known step, not after a guessed delay.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import IndexBusyError

TMP_MARK = ".tmp-"
_step_counts: dict[tuple[str, str], int] = {}


def crash_point(step: str) -> None:
    """Die abruptly, or wait for a signal, here if the environment asks for it (tests only; a no-op otherwise)."""
    if _reached("XCLIP_SEARCH_CRASH_AT", step):
        os._exit(137)
    if _reached("XCLIP_SEARCH_PAUSE_AT", step):
        sys.stderr.write(f"paused at {step}\n")
        sys.stderr.flush()
        while True:  # a handled signal (SIGINT: KeyboardInterrupt) ends the wait by raising
            signal.pause()


def _reached(variable: str, step: str) -> bool:
    """Whether `step` is the step (``step`` or ``step:N``, the N-th time) that `variable` names."""
    spec = os.environ.get(variable)
    if not spec:
        return False
    name, _, nth = spec.partition(":")
    if name != step:
        return False
    key = (variable, step)
    _step_counts[key] = _step_counts.get(key, 0) + 1
    return _step_counts[key] == int(nth or 1)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def atomic_write(path: Path, write: Callable[[BinaryIO], object], *, sync_dir: bool = True) -> str:
    """Publish `path` atomically with content produced by `write`; returns the sha256 of what was written."""
    tmp = _tmp_name(path)
    hasher = _HashingWriter()
    try:
        with open(tmp, "wb") as raw:
            hasher.target = raw
            write(hasher)  # type: ignore[arg-type]
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if sync_dir:
        fsync_dir(path.parent)
    return hasher.hexdigest()


def atomic_write_bytes(path: Path, data: bytes, *, sync_dir: bool = True) -> str:
    """Publish `data` at `path` atomically; returns its sha256."""
    return atomic_write(path, lambda f: f.write(data), sync_dir=sync_dir)


class _HashingWriter:
    """A write-only file object that hashes what passes through (np.save writes in pieces)."""

    def __init__(self) -> None:
        self.target: BinaryIO | None = None
        self._h = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> int:
        assert self.target is not None
        self._h.update(data)
        return self.target.write(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def remove_stale_temporaries(directory: Path) -> int:
    """Delete temporary files left by a crashed writer (only the writer holding the lock calls this)."""
    removed = 0
    if not directory.is_dir():
        return 0
    for entry in directory.iterdir():
        if entry.name.startswith(".") and TMP_MARK in entry.name and entry.is_file():
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


@contextlib.contextmanager
def writer_lock(directory: Path, *, wait: bool = False) -> Iterator[None]:
    """Hold the index's single-writer lock; readers never take it."""
    path = directory / "writer.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise IndexBusyError(
                f"Another process is writing to the index at {directory}",
                hint="Wait for the other 'xclip-search index' run to finish; searches can run meanwhile.",
            ) from exc
        yield
    finally:
        os.close(fd)
