"""Serving indexed video files: which file may be opened, as what content type, and byte ranges of it.

A request names a video by id only. The file's path comes from the catalog, is resolved (symlinks followed)
and must lie inside one of the roots that indexing runs recorded (also resolved; see `roots_from_runs` for
roots recorded as relative paths), have an allowlisted
extension and be a regular file. It is then opened with ``O_NOFOLLOW`` and checked again through the open
descriptor, so what is served is what was checked.

Ranges follow RFC 9110 for the single-range forms browsers send when seeking (``bytes=a-b``, ``bytes=a-``,
``bytes=-n``), with ASCII digits only; an unsatisfiable or malformed ``bytes`` range gets 416 with
``Content-Range: bytes */size``. A multi-range header, a range whose end precedes its start and other units are
ignored (the whole file, 200), which the RFC allows and which keeps many-range requests cheap.

Every descriptor a request opens is closed on every path: `FileRangeResponse` owns the `OpenedFile` and closes
it when the response ends, however it ends (body sent, client gone before or during streaming, error), and an
`OpenedFile` that no response ever took (the handler failed, the request was cancelled) is closed when it is
garbage-collected.
"""

from __future__ import annotations

import json
import os
import re
import stat
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.responses import StreamingResponse

CONTENT_TYPES: dict[str, str] = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
    ".mkv": "video/x-matroska",
    ".avi": "video/x-msvideo",
    ".mpg": "video/mpeg",
    ".mpeg": "video/mpeg",
    ".ts": "video/mp2t",
    ".wmv": "video/x-ms-wmv",
    ".flv": "video/x-flv",
    ".3gp": "video/3gpp",
    ".ogv": "video/ogg",
    ".gif": "image/gif",
}
CHUNK = 256 * 1024
_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only: str.isdigit() accepts "²", which int() refuses


def content_type(path: str) -> str | None:
    """The Content-Type for an allowlisted video extension, else None."""
    return CONTENT_TYPES.get(os.path.splitext(path)[1].lower())


def roots_from_runs(recorded: Iterable[tuple[str | None, Sequence[str]]]) -> list[Path]:
    """Resolved roots from each run's ``runs.roots`` JSON list and the absolute paths of the videos it indexed.

    An absolute root is taken as recorded. A relative one (``xclip-search index clips/``) was relative to a
    working directory nobody recorded; it is replaced by the deepest folder holding every video that run indexed
    outside its absolute roots: never wider than what the run walked. (Recording absolute roots in the indexer
    makes this fallback unnecessary.)
    """
    roots: dict[str, Path] = {}
    for text, video_paths in recorded:
        try:
            items = json.loads(text) if text else []
        except ValueError:
            continue
        items = [i for i in items if isinstance(i, str)] if isinstance(items, list) else []
        absolute = [Path(os.path.realpath(i)) for i in items if os.path.isabs(i)]
        for root in absolute:
            roots[str(root)] = root
        if len(absolute) == len(items):
            continue
        outside = [
            os.path.dirname(p)
            for p in video_paths
            if os.path.isabs(p) and not any(_inside(os.path.realpath(p), r) for r in absolute)
        ]
        if outside:
            derived = Path(os.path.realpath(os.path.commonpath(outside)))
            roots[str(derived)] = derived
    # Only the outermost: `watch` records each batch's changed files and folders as the roots of its run.
    return [root for root in roots.values() if not any(str(parent) in roots for parent in root.parents)]


def _inside(resolved: str, root: Path) -> bool:
    return resolved == str(root) or resolved.startswith(str(root).rstrip(os.sep) + os.sep)


class PathGuard:
    """Decides whether a catalog path may be opened: resolved inside an indexed root, allowlisted, regular."""

    def __init__(self, roots: Iterable[Path]) -> None:
        self.roots = [Path(r) for r in roots]

    def check(self, path: str) -> str | None:
        """The resolved path to open, or None when `path` must not be served."""
        if not os.path.isabs(path) or content_type(path) is None:
            return None
        resolved = os.path.realpath(path)
        if content_type(resolved) is None:
            return None
        if not any(_inside(resolved, root) for root in self.roots):
            return None
        try:
            st = os.stat(resolved)
        except OSError:
            return None
        return resolved if stat.S_ISREG(st.st_mode) else None


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class Unsatisfiable(Exception):
    """The Range header is well formed but selects no byte of the file (416)."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range a Range header asks for; None means "send the whole file".

    Raises `Unsatisfiable` for a range that starts past the end (or an empty suffix) and for a malformed
    ``bytes`` range (anything but ASCII digits around one dash, or a number beyond any file size).
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or not (first or last):
        raise Unsatisfiable
    if (first and not _DIGITS.fullmatch(first)) or (last and not _DIGITS.fullmatch(last)):
        raise Unsatisfiable  # non-digits, or more than 19 digits: beyond any file size (keeps int() cheap)
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # an invalid range is ignored, not refused
    if start >= size:
        raise Unsatisfiable
    return ByteRange(start, min(end, size - 1))


class OpenedFile:
    """A checked file opened for reading; iterate `chunks` to stream a range, then `close` (idempotent).

    If nobody closes it (a handler failed between opening and answering), the descriptor is closed when the
    object is garbage-collected; an explicit `close` disarms that, so a descriptor is never closed twice.
    """

    def __init__(self, resolved: str) -> None:
        self.fd = os.open(resolved, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(self.fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError("not a regular file")
        except BaseException:
            os.close(self.fd)
            raise
        self._finalizer = weakref.finalize(self, os.close, self.fd)
        self.size = st.st_size
        self.etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
        self.mtime = st.st_mtime
        self._closed = False

    def chunks(self, start: int, length: int) -> Iterator[bytes]:
        try:
            offset, remaining = start, length
            while remaining > 0:
                data = os.pread(self.fd, min(CHUNK, remaining), offset)
                if not data:
                    break
                offset += len(data)
                remaining -= len(data)
                yield data
        finally:
            self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._finalizer()  # closes the descriptor, once


class FileRangeResponse(StreamingResponse):
    """Streams bytes [start, start + length) of an `OpenedFile` and closes it when the response ends, on every
    path: body sent, client gone before the first chunk or during streaming, or an error while sending.

    (A plain `StreamingResponse` over `OpenedFile.chunks` closes the file only in the generator's ``finally``,
    which never runs when the client leaves before streaming starts: one leaked descriptor per aborted seek.)
    A cancelled read waits for the worker thread's ``pread`` to return, so the descriptor is never closed under
    a read in progress.
    """

    def __init__(
        self,
        opened: OpenedFile,
        start: int,
        length: int,
        *,
        status_code: int,
        headers: Mapping[str, str],
        media_type: str,
    ) -> None:
        self.opened = opened
        super().__init__(opened.chunks(start, length), status_code=status_code, headers=headers, media_type=media_type)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.opened.close()
