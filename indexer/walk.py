"""Finding the video files under the roots a user names.

Only regular files with an allowlisted extension (case-insensitive) are candidates. Special files (FIFOs,
sockets, devices) are reported and never opened: the walk only ever calls ``stat``. Each file is yielded once
even when several paths reach it (a hard link, a symlinked file, a folder reachable through a symlink): files
are recognised by device and inode, and the later paths are reported as skipped duplicates. Real directories
are walked before any symlink is followed, so a file's path is the one without symlinks wherever one exists;
directories are tracked by device and inode too, so a symlink loop ends. An unreadable directory or a broken
link is a recorded issue, not a crash.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

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
    """A path the walk saw but cannot index; `status` is ``skipped`` or ``failed``.

    `is_file` is False for roots and directories: their issues are reported by the run but are not catalog rows.
    """

    path: str
    status: str
    reason: str
    is_file: bool = True


def is_video_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def walk(roots: Sequence[str | os.PathLike[str]]) -> Iterator[FoundFile | WalkIssue]:
    """Yield every candidate video under `roots` (files or directories) once, and every issue met."""
    return _Walk().run(roots)


class _Walk:
    def __init__(self) -> None:
        self.files: dict[tuple[int, int], str] = {}
        self.dirs: set[tuple[int, int]] = set()
        self.links: deque[str] = deque()  # symlinks met inside directories, followed after the real tree

    def run(self, roots: Sequence[str | os.PathLike[str]]) -> Iterator[FoundFile | WalkIssue]:
        for root in roots:
            path = os.path.abspath(os.fspath(root))
            try:
                st = os.stat(path)
            except FileNotFoundError:
                yield WalkIssue(path, "failed", "not found", is_file=False)
                continue
            except OSError as exc:
                yield WalkIssue(path, "failed", f"cannot stat: {exc.strerror or exc}", is_file=False)
                continue
            if stat.S_ISDIR(st.st_mode):
                yield from self._dir(path, st)
            else:
                # A file named explicitly is a candidate even with an unknown extension; it is reported either way.
                yield from self._file(path, st, explicit=True)
        while self.links:
            path = self.links.popleft()
            try:
                st = os.stat(path)
            except OSError:
                if is_video_name(path):
                    yield WalkIssue(path, "skipped", "broken symbolic link")
                continue
            if stat.S_ISDIR(st.st_mode):
                yield from self._dir(path, st)
            elif is_video_name(path):
                yield from self._file(path, st, explicit=False)

    def _file(self, path: str, st: os.stat_result, *, explicit: bool) -> Iterator[FoundFile | WalkIssue]:
        if not stat.S_ISREG(st.st_mode):
            yield WalkIssue(path, "skipped", "not a regular file")
            return
        if explicit and not is_video_name(path):
            yield WalkIssue(path, "skipped", f"unsupported extension '{os.path.splitext(path)[1] or '(none)'}'")
            return
        key = (st.st_dev, st.st_ino)
        first = self.files.get(key)
        if first is not None:
            if first != path:
                yield WalkIssue(path, "skipped", f"same file as {first}")
            return
        self.files[key] = path
        yield FoundFile(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns, dev=st.st_dev, inode=st.st_ino)

    def _dir(self, path: str, st: os.stat_result) -> Iterator[FoundFile | WalkIssue]:
        key = (st.st_dev, st.st_ino)
        if key in self.dirs:
            return
        self.dirs.add(key)
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield WalkIssue(path, "failed", f"cannot list directory: {exc.strerror or exc}", is_file=False)
            return
        for entry in entries:
            full = os.path.join(path, entry.name)
            try:
                if entry.is_symlink():
                    self.links.append(full)
                    continue
                est = entry.stat(follow_symlinks=False)
            except OSError as exc:
                if is_video_name(entry.name):
                    yield WalkIssue(full, "failed", f"cannot stat: {exc.strerror or exc}")
                continue
            if stat.S_ISDIR(est.st_mode):
                yield from self._dir(full, est)
            elif is_video_name(entry.name):
                yield from self._file(full, est, explicit=False)


def video_files(roots: Sequence[str | os.PathLike[str]]) -> tuple[list[str], list[WalkIssue]]:
    """The videos `index` would find under `roots` (files or folders), in walk order, and the issues met.

    For commands that take files or folders without indexing them (``tag``, ``similar``): the same extensions,
    the same skip rules (special files, duplicates, broken links) and the same per-path issues as an index run.
    """
    files: list[str] = []
    issues: list[WalkIssue] = []
    for item in walk(roots):
        if isinstance(item, FoundFile):
            files.append(item.path)
        else:
            issues.append(item)
    return files, issues
