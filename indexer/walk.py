"""Finding the video files under the roots a user names.

Only regular files with an allowlisted extension are candidates; directories reached through symlinks are
followed once (visited directories are tracked by device and inode, so a link loop ends), special files are
reported and never opened, and an unreadable directory is a recorded issue, not a crash.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp", ".gif"}
)


@dataclass(frozen=True)
class FoundFile:
    """A candidate video with the stat fields that fingerprint it."""

    path: str
    size: int
    mtime_ns: int
    dev: int
    inode: int


@dataclass(frozen=True)
class WalkIssue:
    """A path the walk saw but cannot index; `status` is ``skipped`` or ``failed``."""

    path: str
    status: str
    reason: str


def is_video_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def walk(roots: Sequence[str | os.PathLike[str]]) -> Iterator[FoundFile | WalkIssue]:
    """Yield every candidate video under `roots` (files or directories), each absolute path once."""
    seen_files: set[str] = set()
    visited_dirs: set[tuple[int, int]] = set()
    for root in roots:
        path = os.path.abspath(os.fspath(root))
        try:
            st = os.stat(path)
        except FileNotFoundError:
            yield WalkIssue(path, "failed", "not found")
            continue
        except OSError as exc:
            yield WalkIssue(path, "failed", f"cannot stat: {exc.strerror or exc}")
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk_dir(path, st, visited_dirs, seen_files)
        else:
            # A file named explicitly is a candidate even with an unknown extension; it is reported either way.
            yield from _file_entry(path, st, seen_files, explicit=True)


def _file_entry(path: str, st: os.stat_result, seen: set[str], *, explicit: bool) -> Iterator[FoundFile | WalkIssue]:
    if path in seen:
        return
    seen.add(path)
    if not stat.S_ISREG(st.st_mode):
        yield WalkIssue(path, "skipped", "not a regular file")
        return
    if explicit and not is_video_name(path):
        yield WalkIssue(path, "skipped", f"unsupported extension '{os.path.splitext(path)[1] or '(none)'}'")
        return
    yield FoundFile(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns, dev=st.st_dev, inode=st.st_ino)


def _walk_dir(
    path: str, st: os.stat_result, visited: set[tuple[int, int]], seen: set[str]
) -> Iterator[FoundFile | WalkIssue]:
    key = (st.st_dev, st.st_ino)
    if key in visited:
        return
    visited.add(key)
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield WalkIssue(path, "failed", f"cannot list directory: {exc.strerror or exc}")
        return
    for entry in entries:
        full = os.path.join(path, entry.name)
        try:
            est = os.stat(full)  # follows symlinks; loops are cut by `visited`
        except OSError as exc:
            if is_video_name(entry.name):
                yield WalkIssue(full, "failed", f"cannot stat: {exc.strerror or exc}")
            continue
        if stat.S_ISDIR(est.st_mode):
            yield from _walk_dir(full, est, visited, seen)
        elif is_video_name(entry.name):
            yield from _file_entry(full, est, seen, explicit=False)


def resolve_roots(roots: Sequence[str | os.PathLike[str]]) -> list[Path]:
    return [Path(os.path.abspath(os.fspath(r))) for r in roots]
