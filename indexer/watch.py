"""Keeping an index current while files appear, change, move and disappear under watched folders.

    from indexer.watch import Watcher
    Watcher(["~/Videos"], "xclip-index", on_batch=print).run(stop_event)

The watcher adds no indexing logic of its own: every batch is one ordinary incremental `run_index` with
``prune`` on, whose roots are the paths that changed. That run already recognises unchanged files (a ``stat``),
moves (inode or content hash: the vectors are kept), changed files (re-encoded) and deleted ones (pruned), so
the watcher only decides *which* paths to hand it and *when*:

- **Events** come from watchdog: inotify on Linux; a `PollingObserver` (a periodic ``stat`` scan) on network
  file systems, where inotify does not see other clients' writes, and whenever inotify runs out of watches
  (``fs.inotify.max_user_watches``) or instances (``max_user_instances``). Running out is reported in one line
  naming that sysctl, the half-started inotify observer is stopped, and the watcher switches to polling for all
  roots; if it was already running, it then re-scans them (one run over the roots) to find what the lost watches
  missed: events are never silently dropped. A kernel queue overflow is handled the same way (a re-scan).
- **Stability** (`ChangeSet`): a new or modified file is indexed only once its size and mtime have stayed the
  same for `WatchSettings.settle_s` with no event on it, so a file being copied or written in chunks is
  indexed once, complete, not once per chunk.
- **Batching**: a batch starts once the file system has been quiet for `quiet_s` and the files first seen
  during the burst have settled (or the oldest ready change has waited `max_delay_s` under a continuous
  stream), so a burst of thousands of files is one run, one model load and one commit series.
- **Restarts**: at start, one run over the roots (with ``prune``) finds what changed while nothing watched.

The event collection, the clock and the observer are injectable, so the timing logic is tested with a fake
clock and fake events, without sleeping.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from xclip_search.errors import IndexBusyError, InvalidArgumentError, XClipSearchError

from .pipeline import IndexOptions, IndexReport, run_index
from .subtitles import is_sidecar_name, videos_of_sidecar
from .walk import FoundFile, is_video_name, walk

Clock = Callable[[], float]
Stamp = tuple[int, int]  # (size, mtime_ns)

# File systems on which inotify misses other machines' writes: watched by polling.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "davfs",
        "fuse.sshfs",
        "fuse.rclone",
        "fuse.s3fs",
        "fuse.glusterfs",
        "fuse.cephfs",
    }
)


@dataclass(frozen=True)
class WatchSettings:
    """Timing of the watcher, in seconds."""

    settle_s: float = 2.0  # a file's size and mtime must stay the same this long before it is indexed
    quiet_s: float = 1.0  # a batch starts after this long without a new event ...
    max_delay_s: float = 30.0  # ... or once its oldest ready change has waited this long
    recheck_s: float = 0.5  # how often files that are not yet stable are stat-ed again
    poll_interval_s: float = 2.0  # scan interval of the polling observer
    retry_s: float = 10.0  # wait before retrying a batch whose run failed (index busy, ...)
    polling: bool = False  # poll every root (network file systems are polled anyway)

    def __post_init__(self) -> None:
        for name in ("settle_s", "quiet_s", "max_delay_s", "recheck_s", "poll_interval_s", "retry_s"):
            if getattr(self, name) < 0:
                raise InvalidArgumentError(f"Invalid {name} ({getattr(self, name)}). It cannot be negative.")


def _stat(path: str) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


@dataclass
class _Pending:
    stamp: Stamp | None
    since: float  # last time an event or a stat said the file changed
    first: float


@dataclass(frozen=True)
class Batch:
    """The roots one run gets: files that are stable now, and the folders to prune where paths disappeared.

    The prune of `run_index` retires catalog rows *under* a root that are gone, so a deleted file is pruned
    through its folder (whose walk costs a ``stat`` per unchanged sibling) and a deleted folder through itself.
    """

    files: tuple[str, ...]
    gone: tuple[str, ...]

    @property
    def roots(self) -> list[str]:
        return [*self.files, *self.gone]


class ChangeSet:
    """Changed paths waiting for their batch: the debounce, stability and batching rules, with no I/O but `stat`.

    `touched` records a created, modified or moved-in file; `gone` a deleted or moved-away file or folder.
    `take` returns the batch that is due at the clock's time, or None. A deleted file is pruned through its
    folder, so it waits while a file under that folder is still being written (the folder's walk would
    otherwise index the unfinished file).
    """

    def __init__(self, settings: WatchSettings, *, clock: Clock = time.monotonic, stat: Callable[..., Any] = _stat):
        self.settings = settings
        self._clock = clock
        self._stat: Callable[[str], Stamp | None] = stat
        self._pending: dict[str, _Pending] = {}
        self._gone: dict[str, tuple[float, bool]] = {}  # path -> (when, is a folder)
        self._last_event = float("-inf")

    def __len__(self) -> int:
        return len(self._pending) + len(self._gone)

    def touched(self, path: str) -> None:
        now = self._clock()
        self._last_event = now
        self._gone.pop(path, None)
        entry = self._pending.get(path)
        if entry is None:
            self._pending[path] = _Pending(self._stat(path), now, now)
        else:
            entry.stamp, entry.since = self._stat(path), now

    def gone(self, path: str, *, is_dir: bool = False) -> None:
        now = self._clock()
        self._last_event = now
        self._pending.pop(path, None)
        self._gone.setdefault(path, (now, is_dir))

    def _check(self, now: float) -> list[tuple[str, float]]:
        """Stat the waiting files; return the stable ones with the time they became ready."""
        ready = []
        for path, entry in list(self._pending.items()):
            stamp = self._stat(path)
            if stamp is None:  # vanished before it settled: a deletion (harmless if it was never indexed)
                del self._pending[path]
                self._gone.setdefault(path, (now, False))
                continue
            if stamp != entry.stamp:
                entry.stamp, entry.since = stamp, now
            elif now - entry.since >= self.settings.settle_s:
                ready.append((path, entry.since + self.settings.settle_s))
        return ready

    def take(self) -> Batch | None:
        """The batch due now (and forget its paths), or None."""
        now = self._clock()
        s = self.settings
        ready = self._check(now)
        # A deletion waits as long as a new file would: a move seen as delete + create then lands in one batch
        # (the run recognises the move and keeps the vectors) instead of a prune followed by a re-encode.
        busy = self._busy_folders({p for p, _ in ready})
        gone = [
            (p, t + s.settle_s)
            for p, (t, is_dir) in self._gone.items()
            if now - t >= s.settle_s and (is_dir or os.path.dirname(p) not in busy)
        ]
        if not ready and not gone:
            return None
        oldest = min(t for _, t in ready + gone)
        # Files first seen less than a settle time ago are most likely the tail of the same burst: wait for them
        # to settle too, so a copy of thousands of files is one run. A file written for longer does not hold
        # the batch back (it was first seen long ago), and nothing waits past max_delay_s.
        taken = {p for p, _ in ready}
        young = any(now - e.first < s.settle_s for p, e in self._pending.items() if p not in taken)
        if (now - self._last_event < s.quiet_s or young) and now - oldest < s.max_delay_s:
            return None
        for path, _ in ready:
            del self._pending[path]
        roots = {p if self._gone.pop(p)[1] else os.path.dirname(p) for p, _ in gone}
        return Batch(files=tuple(sorted(p for p, _ in ready)), gone=tuple(sorted(roots)))

    def _busy_folders(self, ready: set[str]) -> set[str]:
        """Every folder holding, at any depth, a file that is still settling."""
        busy: set[str] = set()
        for path in self._pending:
            if path in ready:
                continue
            folder = os.path.dirname(path)
            while folder not in busy and folder != os.path.dirname(folder):
                busy.add(folder)
                folder = os.path.dirname(folder)
        return busy

    def next_check(self) -> float | None:
        """Seconds until `take` may have something to return (None: nothing is waiting)."""
        if not self._pending and not self._gone:
            return None
        return max(0.0, min(self.settings.recheck_s, self.settings.quiet_s))


# -- events from watchdog ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FsEvent:
    """One file-system event, reduced to what the watcher needs (``kind``: touched, gone, moved, rescan)."""

    kind: str
    path: str
    dest: str | None = None
    is_dir: bool = False


class ObserverLike(Protocol):
    def schedule(self, event_handler: Any, path: str, *, recursive: bool = ...) -> Any: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def join(self, timeout: float | None = ...) -> None: ...


def _make_handler(put: Callable[[FsEvent], None]) -> Any:
    from watchdog.events import FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: Any) -> None:
            kind = event.event_type
            src = os.fsdecode(event.src_path)
            if kind == "moved":
                put(FsEvent("moved", src, os.fsdecode(event.dest_path), event.is_directory))
            elif kind == "deleted":
                put(FsEvent("gone", src, None, event.is_directory))
            elif kind in ("created", "modified", "closed"):
                if kind == "modified" and event.is_directory:
                    return  # a folder's own mtime: its entries have their own events
                put(FsEvent("touched", src, None, event.is_directory))

        def on_events_lost(self, event: Any) -> None:  # kernel queue overflow: some events are gone
            put(FsEvent("rescan", os.fsdecode(event.src_path), None, True))

    return Handler()


def filesystem_type(path: str) -> str | None:
    """The type of the file system holding `path`, from /proc/self/mounts (None where unknown)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return None
    real = os.path.realpath(path)
    best, kind = "", None
    for fields in mounts:
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def is_watch_limit(exc: BaseException) -> bool:
    """Whether `exc` is inotify running out of watches (ENOSPC) or instances (EMFILE)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EMFILE)


# The sysctl each limit error names, and a value to raise it to.
WATCHES, INSTANCES = ("max_user_watches", "1048576"), ("max_user_instances", "1024")


def _limit_sysctl(exc: OSError) -> tuple[str, str]:
    return INSTANCES if exc.errno == errno.EMFILE else WATCHES


def _limit_value(name: str) -> str:
    try:
        return Path("/proc/sys/fs/inotify", name).read_text().strip()
    except OSError:
        return "?"


class _LostWatches(logging.Handler):
    """Hears watchdog say it could not add a watch for a new folder (the limit hit while running)."""

    def __init__(self, on_lost: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self._on_lost = on_lost

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith(("Unable to watch", "Unable to rebuild recursive inotify watches")):
            self._on_lost(text)


WATCHDOG_LOGGER = "watchdog.observers.inotify"


# -- the watcher ------------------------------------------------------------------------------------------


@dataclass
class BatchResult:
    """One run the watcher made: why (``start``, ``changes``, ``rescan``), how many paths, and its report."""

    trigger: str
    paths: int
    report: IndexReport
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"trigger": self.trigger, "paths": self.paths, **self.report.to_dict(), "seconds": self.seconds}


@dataclass
class _Runner:
    index_dir: str
    model: str | None
    options: IndexOptions
    run: Callable[..., IndexReport]

    def __call__(self, roots: Sequence[str]) -> IndexReport:
        # allow_empty: a watched folder may be empty (it waits for files), and a batch may only delete.
        options = replace(self.options, prune=True, allow_empty=True)
        return self.run(list(roots), self.index_dir, model=self.model, options=options)


@dataclass
class Watcher:
    """Watch `roots` and keep `index_dir` current until `run`'s stop event is set.

    `on_batch` receives every run's result, `on_notice` one-line messages (fallback to polling, retried runs).
    `observer_factory(polling)` builds a watchdog observer (tests inject failures); `run_index` and `clock`
    are injectable too.
    """

    roots: Sequence[str | os.PathLike[str]]
    index_dir: str | os.PathLike[str]
    model: str | None = None
    options: IndexOptions = field(default_factory=IndexOptions)
    settings: WatchSettings = field(default_factory=WatchSettings)
    on_batch: Callable[[BatchResult], None] | None = None
    on_notice: Callable[[str], None] | None = None
    observer_factory: Callable[[bool], ObserverLike] | None = None
    run_index: Callable[..., IndexReport] = run_index
    clock: Clock = time.monotonic

    def __post_init__(self) -> None:
        if not self.roots:
            raise InvalidArgumentError("No folders to watch", hint="Pass one or more folders.")
        self._roots = [os.path.abspath(os.path.expanduser(os.fspath(r))) for r in self.roots]
        for root in self._roots:
            if not os.path.isdir(root):
                raise InvalidArgumentError(f"Cannot watch {root}: not a folder")
        self._index_dir = os.path.abspath(os.path.expanduser(os.fspath(self.index_dir)))
        self._events: queue.Queue[FsEvent] = queue.Queue()
        self._changes = ChangeSet(self.settings, clock=self.clock)
        self._runner = _Runner(self._index_dir, self.model, self.options, self.run_index)
        self._observer: ObserverLike | None = None
        self.polling = False
        self._rescan_needed = False
        self._limit_pending: str | None = None
        self._retry_at = float("-inf")
        self.events_seen = 0  # file-system events taken from the observer so far
        self._lost: _LostWatches | None = None
        self.caught_up = threading.Event()  # set once the start-up run is done (or failed: see `error`)
        self.error: BaseException | None = None

    # -- observers --

    def _notice(self, text: str) -> None:
        if self.on_notice is not None:
            self.on_notice(text)

    def _new_observer(self, polling: bool) -> ObserverLike:
        if self.observer_factory is not None:
            return self.observer_factory(polling)
        if polling:
            from watchdog.observers.polling import PollingObserver

            return PollingObserver(timeout=self.settings.poll_interval_s)
        from watchdog.observers import Observer

        return Observer()

    def _start_observer(self, polling: bool) -> None:
        observer = self._new_observer(polling)
        handler = _make_handler(self._events.put)
        try:
            for root in self._roots:
                observer.schedule(handler, root, recursive=True)
            observer.start()
        except BaseException:
            # The limit can be hit on the second root after the first one's emitter started: stop the half-started
            # observer, or that emitter keeps its inotify watches and thread (and sends every event twice).
            _stop(observer)
            raise
        self._observer, self.polling = observer, polling

    def _watch(self) -> None:
        """Start watching: polling where asked or on network file systems, else inotify with a fallback."""
        network = sorted({t for t in map(filesystem_type, self._roots) if t in NETWORK_FILESYSTEMS})
        if self.settings.polling or network:
            if network:
                self._notice(f"Network file system ({', '.join(network)}): polling every {self._every()} instead.")
            self._start_observer(True)
            return
        try:
            self._start_observer(False)
        except OSError as exc:
            if not is_watch_limit(exc):
                raise
            self._stop_observer()
            self._notice(self._limit_text(exc.strerror or str(exc), _limit_sysctl(exc)))
            self._start_observer(True)

    def _every(self) -> str:
        return f"{self.settings.poll_interval_s:g} s"

    def _limit_text(self, what: str, sysctl: tuple[str, str] = WATCHES) -> str:
        """The one warning line: what was hit, the limit's current value, what happens now, how to raise it."""
        name, raised = sysctl
        return (
            f"{what} (fs.inotify.{name}={_limit_value(name)}): watching by polling every {self._every()} "
            f"instead; raise it with: sudo sysctl fs.inotify.{name}={raised}"
        )

    def _fall_back_to_polling(self, what: str) -> None:
        """The limit was hit after start (a new folder went unwatched): poll everything, re-scan the roots."""
        self._notice(self._limit_text(what))
        self._stop_observer()
        self._start_observer(True)
        self._rescan_needed = True

    def _stop_observer(self) -> None:
        if self._observer is not None:
            _stop(self._observer)
        self._observer = None

    # -- events --

    def _ignored(self, path: str) -> bool:
        return path == self._index_dir or path.startswith(self._index_dir + os.sep)

    def _add(self, event: FsEvent) -> None:
        if event.kind == "rescan":
            self._rescan_needed = True
            return
        if event.kind == "limit":
            self._limit_pending = event.path
            return
        if event.kind == "moved":
            self._add(FsEvent("gone", event.path, None, event.is_dir))
            self._add(FsEvent("touched", event.dest or "", None, event.is_dir))
            return
        if self._ignored(event.path):
            return
        if not event.is_dir and is_sidecar_name(event.path):
            # A subtitle file appeared, changed or went: the run over its videos re-reads their sidecars.
            for video in videos_of_sidecar(event.path):
                if not self._ignored(video):
                    self._changes.touched(video)
            return
        if event.kind == "gone":
            if event.is_dir or is_video_name(event.path):
                self._changes.gone(event.path, is_dir=event.is_dir)
            return
        if event.is_dir:  # a folder created or moved in: its files may never get events of their own
            for item in walk([event.path]):
                if isinstance(item, FoundFile) and not self._ignored(item.path):
                    self._changes.touched(item.path)
        elif is_video_name(event.path):
            self._changes.touched(event.path)

    def feed(self, events: Iterable[FsEvent]) -> None:
        """Add events as if the observer had sent them (tests and other event sources)."""
        for event in events:
            self._events.put(event)

    def _drain(self, timeout: float | None) -> None:
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._add(event)
            self.events_seen += 1
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return

    # -- runs --

    def _index(self, roots: Sequence[str], trigger: str) -> BatchResult:
        started = self.clock()
        report = self._runner(roots)
        # A root that vanished before the run is a deletion the prune handles, not a failure.
        given = set(roots)
        report.outcomes = [
            o for o in report.outcomes if not (o.status == "failed" and o.reason == "not found" and o.path in given)
        ]
        result = BatchResult(trigger, len(roots), report, round(self.clock() - started, 3))
        if self.on_batch is not None:
            self.on_batch(result)
        return result

    def catch_up(self) -> BatchResult:
        """One ordinary run over all roots: what changed while nothing watched (start, lost events)."""
        return self._index(self._roots, "start")

    def start(self) -> BatchResult:
        """Start the observer, then make the start-up run (so nothing that changes during it is missed)."""
        self._lost = _LostWatches(lambda text: self._events.put(FsEvent("limit", text)))
        logging.getLogger(WATCHDOG_LOGGER).addHandler(self._lost)
        try:
            self._watch()
            return self.catch_up()
        except BaseException as exc:
            self.error = exc
            self.close()
            raise
        finally:
            self.caught_up.set()

    def close(self) -> None:
        """Stop watching (idempotent)."""
        lost = self._lost
        if lost is not None:
            logging.getLogger(WATCHDOG_LOGGER).removeHandler(lost)
            self._lost = None
        self._stop_observer()

    def run(self, stop: threading.Event) -> None:
        """Watch until `stop` is set. Raises the start-up run's error; later failed runs are retried."""
        self.start()
        try:
            while not stop.is_set():
                wait = self._changes.next_check()
                self.step(min(wait, 1.0) if wait is not None else 1.0)
        finally:
            self.close()

    def step(self, timeout: float = 0.0) -> BatchResult | None:
        """Take the events that arrived (waiting up to `timeout` s for one), then run the batch due, if any."""
        self._drain(timeout)
        self._handle_limit_events()
        if self.clock() < self._retry_at:
            return None
        try:
            if self._rescan_needed:
                self._rescan_needed = False
                try:
                    return self._index(self._roots, "rescan")
                except XClipSearchError:
                    self._rescan_needed = True
                    raise
            batch = self._changes.take()
            return self._run_batch(batch) if batch is not None else None
        except XClipSearchError as exc:
            # The changes stay queued (re-added by _run_batch, or the re-scan flagged again); retried later.
            busy = " (another indexer holds it)" if isinstance(exc, IndexBusyError) else ""
            self._notice(f"Indexing failed{busy}: {exc.message}; trying again in {self.settings.retry_s:g} s")
            self._retry_at = self.clock() + self.settings.retry_s
            return None

    @property
    def waiting(self) -> int:
        """Changed paths not yet indexed."""
        return len(self._changes)

    def _handle_limit_events(self) -> None:
        limit, self._limit_pending = self._limit_pending, None
        if limit and not self.polling:
            self._fall_back_to_polling(f"inotify watch limit reached ({limit})")
        elif not self.polling and self._observer_died():
            self._fall_back_to_polling("inotify stopped watching (its thread ended)")

    def _observer_died(self) -> bool:
        """Whether the inotify observer or one of its emitters stopped on its own (older watchdog releases end
        the emitter's thread when a new folder cannot get a watch, instead of logging it)."""
        observer: Any = self._observer
        if observer is None or not hasattr(observer, "is_alive"):
            return False
        emitters = getattr(observer, "emitters", ())
        return not observer.is_alive() or any(not e.is_alive() for e in emitters)

    def _run_batch(self, batch: Batch) -> BatchResult:
        try:
            return self._index(batch.roots, "changes")
        except XClipSearchError:
            for path in batch.files:
                self._changes.touched(path)
            for path in batch.gone:
                self._changes.gone(path, is_dir=True)
            raise


def _stop(observer: ObserverLike) -> None:
    """Stop `observer` and its emitters, also one whose start failed (its thread never ran: join refuses)."""
    with contextlib.suppress(RuntimeError):
        observer.stop()
        observer.join(10)


@contextlib.contextmanager
def watching_in_background(watcher: Watcher) -> Iterator[Watcher]:
    """Run `watcher` in a daemon thread for the duration of the block (``serve --watch``).

    Without a published index yet, the block starts only once the start-up run has made one (a server needs an
    index to open), and that run's error is raised here; otherwise the block starts at once and a server sees
    each run's generation as it is published.
    """
    from xclip_search.store.manifest import MANIFEST_NAME

    stop = threading.Event()
    thread = threading.Thread(target=_run_quietly, args=(watcher, stop), name="xclip-watch", daemon=True)
    thread.start()
    try:
        if not (Path(watcher._index_dir) / MANIFEST_NAME).exists():
            watcher.caught_up.wait()
            if watcher.error is not None:
                raise watcher.error
        yield watcher
    finally:
        stop.set()
        thread.join(60)


def _run_quietly(watcher: Watcher, stop: threading.Event) -> None:
    try:
        watcher.run(stop)
    except XClipSearchError as exc:  # also kept in watcher.error for a caller waiting on caught_up
        if watcher.on_notice is not None:
            watcher.on_notice(f"Watching stopped: {exc.message}")
