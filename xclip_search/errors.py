"""One error hierarchy for the whole project.

Every failure a user can cause or fix is an `XClipSearchError` subclass carrying a one-line message and,
where one helps, a hint that says what to do. The command line prints ``Error: <message>`` and the hint and
exits with `exit_code`; library callers catch `XClipSearchError` and never see a bare `RuntimeError`.

The library names no command-line flag: an error about one parameter says which in `argument` (the Python
name, e.g. ``"at"``), and the command line adds its flag (``--at``) to the message.
"""

from __future__ import annotations


class XClipSearchError(Exception):
    """Root of every error raised on purpose by xclip-search."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None, argument: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.argument = argument

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(XClipSearchError):
    """A parameter is outside what the operation supports (empty query, no labels, k < 1, ...)."""


class CheckpointError(XClipSearchError):
    """A model checkpoint cannot be found, read, or trusted (pickled weights only, bad config)."""


class IndexNotFoundError(XClipSearchError):
    """The index directory does not exist or holds no published index."""


class IndexMismatchError(XClipSearchError):
    """The index was built by another model (or format) than the one asked for."""


class IndexCorruptError(XClipSearchError):
    """A published file of the index fails its checksum or cannot be parsed."""


class IndexBusyError(XClipSearchError):
    """Another process holds the index's writer lock."""


class VideoError(XClipSearchError):
    """A video file cannot be probed, decoded or sampled. Recorded per file; never stops an indexing run."""


class VideoLimitError(VideoError):
    """A video exceeds a configured limit (frame size, duration, frame count); recorded as skipped, not failed."""


class NoVideosError(InvalidArgumentError):
    """An indexing run found no video file under its paths and had nothing to prune there: it changes nothing
    (no empty index is created), since an empty folder is more often a wrong path or an unmounted drive."""


class DependencyError(XClipSearchError):
    """An optional dependency needed for this operation is not installed."""


class CatalogError(XClipSearchError):
    """The catalog database cannot be reached, is newer than this code, or belongs to another index."""


class NotFoundError(XClipSearchError):
    """An id names no live video or segment in the generation the request reads."""


class UnsupportedError(XClipSearchError):
    """The operation needs something this build does not have yet."""


class ShardCorruptError(IndexCorruptError):
    """A vector shard's files are missing or fail their checksums; `shard` names it, `paths` the videos it holds."""

    def __init__(self, message: str, *, shard: str, paths: tuple[str, ...] = (), hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.shard = shard
        self.paths = paths


class CatalogCorruptError(CatalogError):
    """The catalog database file is damaged (truncated, overwritten, fails SQLite's integrity check)."""


class ManifestCorruptError(IndexCorruptError):
    """``manifest.json`` cannot be parsed or fails its checksum; a writer rebuilds it from the catalog."""


class RequestTooLargeError(InvalidArgumentError):
    """A request asks for more work or sends more bytes than one request may (the server answers 413)."""


class ServerBusyError(XClipSearchError):
    """Too many expensive requests are already running; retry later (the server answers 429)."""


class ClientGoneError(XClipSearchError):
    """The client left before its answer was ready (search as you type aborts the previous request); the
    server answers 499 to nobody and logs nothing."""


class WorkerStartError(XClipSearchError):
    """Decode worker processes cannot start (a broken installation), so nothing can be decoded."""


class RayUnavailableError(XClipSearchError):
    """``--ray`` was asked for, but Ray is not installed or the cluster cannot be reached."""


class ProtocolError(Exception):
    """The other side of a worker pipe closed it or sent something malformed (internal: the pool turns it into a
    failed file or a `WorkerStartError`, never a message of its own)."""
