"""Finding the video files under the roots a user names.

Only regular files with an allowlisted extension (case-insensitive) are candidates. Special files (FIFOs,
sockets, devices) are reported and never opened: the walk only ever calls ``stat``. Each file is yielded once
even when several paths reach it (a hard link, a symlinked file, a folder reachable through a symlink): files
are recognised by device and inode, and the later paths are reported as skipped duplicates. Real directories
are walked before any symlink is followed, so a file's path is the one without symlinks wherever one exists;
directories are tracked by device and inode too, so a symlink loop ends. An unreadable directory or a broken
link is a recorded issue, not a crash.

**The symlink rule** (the same for indexing and serving): a symbolic link met inside a root is followed when its
target (resolved) stays inside one of the roots; a link leading outside is skipped with the reason recorded,
unless `follow_links` (``index --follow-links``), which follows it and lists its target in `Walker.outside`: the
run records those targets with its roots, so the server (whose `PathGuard` serves only files inside recorded
roots) can play every file the run indexed. A root named explicitly is followed wherever it points.
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


def walk(roots: Sequence[str | os.PathLike[str]], *, follow_links: bool = False) -> Iterator[FoundFile | WalkIssue]:
    """Yield every candidate video under `roots` (files or directories) once, and every issue met."""
    return iter(Walker(roots, follow_links=follow_links))


def _inside(resolved: str, root: str) -> bool:
    return resolved == root or resolved.startswith(root.rstrip(os.sep) + os.sep)


class Walker:
    """One walk over `roots` (iterate it once); afterwards `outside` lists the resolved targets of the links
    followed out of the roots (only with `follow_links`), which a run records as roots too."""

    def __init__(self, roots: Sequence[str | os.PathLike[str]], *, follow_links: bool = False) -> None:
        self.roots = [os.path.abspath(os.fspath(r)) for r in roots]
        self.follow_links = follow_links
        self.outside: list[str] = []
        self.files: dict[tuple[int, int], str] = {}
        self.dirs: set[tuple[int, int]] = set()
        self.links: deque[str] = deque()  # symlinks met inside directories, followed after the real tree
        self._real_roots = [os.path.realpath(r) for r in self.roots]

    def __iter__(self) -> Iterator[FoundFile | WalkIssue]:
        return self.run()

    def _inside_roots(self, path: str) -> bool:
        target = os.path.realpath(path)
        return any(_inside(target, root) for root in self._real_roots)

    def _leaves_roots(self, path: str, st: os.stat_result) -> Iterator[WalkIssue]:
        """For a link whose target is outside the roots: its issue, or with `follow_links` its recorded target."""
        target = os.path.realpath(path)
        if self.follow_links:
            if target not in self.outside:
                self.outside.append(target)
            return
        is_dir = stat.S_ISDIR(st.st_mode)
        if is_dir or is_video_name(path):
            reason = f"symbolic link to {target}, outside the indexed folders (index with --follow-links to include it)"
            yield WalkIssue(path, "skipped", reason, is_file=not is_dir)

    def run(self) -> Iterator[FoundFile | WalkIssue]:
        for path in self.roots:
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
            if not self._inside_roots(path):
                yield from self._leaves_roots(path, st)
                if not self.follow_links:
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
