"""The supervised decode pool: worker processes, one file at a time each, watched by one supervisor thread.

Each worker (`indexer.worker`, a fresh interpreter without torch) receives one task at a time over a pipe and
streams back the file's segments. The supervisor thread dispatches files to idle workers, reads their
messages and forwards them as events to the consumer (the model loop) through a bounded queue, so decoding
runs ahead of the model by at most `max_buffered` segments. It enforces the isolation rules of DESIGN.md §5:

- a file whose worker makes no progress for `timeout_s` seconds (no frame decoded, no segment, no result) is
  marked failed and the worker is killed (SIGKILL) and replaced; while the consumer is not reading, that
  clock stops;
- a worker that dies (segfault, abort, out of memory) costs the file it was decoding and is replaced; the
  reason names the signal and the decoder's last log line;
- each worker's address space is capped (`memory_mb`, RLIMIT_AS), so a memory bomb fails inside the worker.

Workers that cannot start at all (a broken installation) stop the run with an error instead of looping.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import queue
import selectors
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xclip_search.errors import WorkerStartError

from .extract import ExtractSpec, FileSummary
from .probe import Probe
from .protocol import Config, Done, Failed, ProtocolError, Ready, Segment, Task, receive
from .segments import SegmentPlan
from .worker import answer
from .workerproc import START_TIMEOUT_S, WorkerProcess, death_reason, worker_env

DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MEMORY_MB = 2048
_MAX_START_FAILURES = 3


# -- events delivered to the consumer ---------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentReady:
    """One decoded segment of `path`; segments of an older `attempt` of the same file are to be dropped."""

    path: str
    attempt: int
    plan: SegmentPlan
    crops: np.ndarray
    thumbnail: bytes | None = None


@dataclass(frozen=True)
class FileDone:
    """`path` is decoded completely (all its segments were delivered before this event)."""

    path: str
    summary: FileSummary | None
    probe: Probe | None
    content_hash: str | None
    warnings: int
    log: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FileFailed:
    """`path` could not be decoded (`status` failed) or was refused by a limit (`status` skipped)."""

    path: str
    status: str
    reason: str
    content_hash: str | None = None
    warnings: int = 0


PoolEvent = SegmentReady | FileDone | FileFailed


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


# -- the pool ---------------------------------------------------------------------------------------------


class DecodePool:
    """Decode many files in supervised worker processes; `workers=0` decodes in this process (no isolation)."""

    def __init__(
        self,
        spec: ExtractSpec,
        workers: int | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_mb: int = DEFAULT_MEMORY_MB,
        max_buffered: int | None = None,
        recycle_after: int = 1000,
        nice: int = 0,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.spec = spec
        self.workers = default_workers() if workers is None else workers
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        if max_buffered is None:
            # Decoding may run ahead of the model by ~256 MB of frames (a few thousand small segments, ~200 at
            # X-CLIP's 224 px): enough to keep the workers busy while the model loads or a batch runs.
            h, w = spec.pixels.output_size(224, 224)
            max_buffered = max(16, min(20_000, (256 << 20) // (spec.num_frames * h * w * 3)))
        self.max_buffered = max_buffered
        self.recycle_after = recycle_after
        self.nice = nice
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: list[WorkerProcess] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._spawner: concurrent.futures.ThreadPoolExecutor | None = None
        self._next_id = 0

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for w in self._live:
            w.close()
        self._live = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        if self._spawner is not None:
            self._spawner.shutdown()
            self._spawner = None

    # -- consumer side --------------------------------------------------------------------------------------

    def run(self, paths: Iterable[str], *, mode: str = "extract") -> Iterator[PoolEvent]:
        """Events for every path, in completion order; each path ends with one `FileDone` or `FileFailed`.

        ``mode="probe"`` only hashes and probes (``FileDone`` without summary or segments).
        """
        yield from self.start(paths, mode=mode)

    def start(self, paths: Iterable[str], *, mode: str = "extract") -> Iterator[PoolEvent]:
        """Like `run`, but decoding starts now, before the events are first asked for (the model can load
        meanwhile); up to `max_buffered` segments wait for the consumer."""
        if self.workers == 0:
            return (event for path in paths for event in self._inline(path, mode))
        out: queue.Queue[PoolEvent | BaseException | None] = queue.Queue(maxsize=self.max_buffered)
        self._stop.clear()
        thread = threading.Thread(
            target=self._supervise, args=(list(paths), mode, out), name="decode-supervisor", daemon=True
        )
        self._thread = thread
        thread.start()
        return self._drain(out, thread)

    def _drain(
        self, out: queue.Queue[PoolEvent | BaseException | None], thread: threading.Thread
    ) -> Iterator[PoolEvent]:
        try:
            while True:
                item = out.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._stop.set()
            while thread.is_alive():  # unblock a supervisor waiting on a full queue
                with contextlib.suppress(queue.Empty):
                    out.get(timeout=0.05)
            thread.join()
            self._thread = None

    # -- supervisor thread ----------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return worker_env(self.memory_mb, self.nice)

    def _supervise(self, paths: list[str], mode: str, out: queue.Queue[PoolEvent | BaseException | None]) -> None:
        try:
            self._loop(paths, mode, out)
            self._put(out, None)
        except BaseException as exc:  # hand any error to the consumer rather than dying silently
            self._put(out, exc)

    def _put(self, out: queue.Queue[Any], item: Any) -> float:
        """Put `item`, waiting while the consumer is behind; returns the seconds spent waiting."""
        started = time.monotonic()
        while True:
            try:
                out.put(item, timeout=0.1)
                return time.monotonic() - started
            except queue.Full:
                if self._stop.is_set():
                    return time.monotonic() - started

    def _spawn(self) -> WorkerProcess:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="xclip-search-workers-")
        if self._spawner is None:
            self._spawner = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="decode-spawner")
        # A worker's death signal (PR_SET_PDEATHSIG) fires when the *thread* that started it ends. Each `run`
        # has its own supervisor thread, so workers are started by one long-lived thread instead: they survive
        # from one `run` to the next (warm_up, the distributed decode stage's one file per call).
        tmp, env = Path(self._tmp.name), self._env()
        w = self._spawner.submit(WorkerProcess, tmp, env).result()
        self._live.append(w)
        return w

    def warm_up(self) -> None:
        """Start the workers and wait until they are ready (so timings that follow exclude start-up)."""
        if self.workers == 0:
            return
        for _ in self.run([], mode="probe"):
            pass

    def _loop(self, paths: list[str], mode: str, out: queue.Queue[PoolEvent | BaseException | None]) -> None:
        tasks = [Task(i, p, mode) for i, p in enumerate(paths, start=self._next_id)]
        self._next_id += len(paths)
        _Supervision(self, tasks, out).run()

    def _emit(self, out: queue.Queue[PoolEvent | BaseException | None], event: PoolEvent) -> None:
        """Hand `event` to the consumer; while it is behind, the workers' timeout clocks stop."""
        waited = self._put(out, event)
        if waited > 0.05:
            for w in self._live:
                w.deadline += waited

    def _event(self, task: Task, message: Segment | Done | Failed) -> PoolEvent:
        """What the consumer learns from a worker's (or the inline decoder's) answer to `task`."""
        if isinstance(message, Segment):
            return SegmentReady(task.path, message.attempt, message.plan, message.crops, message.thumbnail)
        warnings = message.log_lines
        if isinstance(message, Done):
            if message.summary is not None:
                warnings += message.summary.warnings
            return FileDone(task.path, message.summary, message.probe, message.content_hash, warnings, message.log)
        reason, log = message.reason, message.log
        if message.oom:
            reason = f"out of memory (worker limit {self.memory_mb} MB)"
        elif log and message.status == "failed" and log[-1] not in reason:
            reason = f"{reason} (decoder log: {log[-1][:200]})"
        return FileFailed(task.path, message.status, reason, message.content_hash, warnings)

    def _inline(self, path: str, mode: str) -> Iterator[PoolEvent]:
        """Decode in this process (``workers=0``): same events, no isolation; for tests and tiny jobs. A file's
        segments are delivered once it decoded completely."""
        task = Task(0, path, mode)
        segments: list[PoolEvent] = []
        for message in answer(task, self.spec):
            if isinstance(message, Segment):
                segments.append(self._event(task, message))
                continue
            if isinstance(message, Done):
                yield from segments
            yield self._event(task, message)


class _Supervision:
    """One `run` of the pool's workers, on the supervisor thread: spawn, dispatch, read, time out, repeat."""

    def __init__(self, pool: DecodePool, tasks: list[Task], out: queue.Queue[PoolEvent | BaseException | None]) -> None:
        self.pool = pool
        self.pending = deque(tasks)
        self.warm_up = not tasks  # no files: start every worker and wait until they are ready
        self.remaining = len(tasks)
        self.out = out
        self.start_failures = 0
        self.sel = selectors.DefaultSelector()
        for w in pool._live:
            self.sel.register(w.rfd, selectors.EVENT_READ, w)

    def run(self) -> None:
        try:
            while not self.pool._stop.is_set():
                self.spawn()
                if not self.remaining and all(w.ready for w in self.pool._live):
                    break
                self.dispatch()
                self.read()
                self.time_out()
        finally:
            # Files still in flight will never be consumed (the consumer stopped): their workers go.
            for w in [w for w in self.pool._live if w.task is not None]:
                self.retire(w, kill=True)
            for w in self.pool._live:
                self.sel.unregister(w.rfd)
            self.sel.close()

    # -- spawn ------------------------------------------------------------------------------------------------

    def spawn(self) -> None:
        """Keep enough workers: replace those that died, were recycled or were killed."""
        pool = self.pool
        target = pool.workers if self.warm_up else min(pool.workers, self.remaining)
        while len(pool._live) < target:
            w = pool._spawn()
            self.sel.register(w.rfd, selectors.EVENT_READ, w)

    def failed_start(self, why: str) -> None:
        self.start_failures += 1
        if self.start_failures >= _MAX_START_FAILURES:
            raise WorkerStartError(
                f"Decode worker processes cannot start: {why}",
                hint="Check that PyAV and decord import in this Python environment.",
            )

    def retire(self, w: WorkerProcess, *, kill: bool) -> int | None:
        """Stop watching `w` and end it (SIGKILL, or wait for it to exit); returns its exit status."""
        self.sel.unregister(w.rfd)
        self.pool._live.remove(w)
        if kill:
            w.kill()
            code = w.proc.returncode
        else:
            code = w.reap()
        w.log_path.unlink(missing_ok=True)
        return code

    # -- dispatch ---------------------------------------------------------------------------------------------

    def dispatch(self) -> None:
        """Hand the next files to idle workers."""
        for w in self.pool._live:
            if w.ready and w.task is None and self.pending:
                w.task = self.pending.popleft()
                w.deadline = time.monotonic() + self.pool.timeout_s
                with contextlib.suppress(OSError):  # if it died, the read side reports it
                    w.send(w.task)

    # -- read -------------------------------------------------------------------------------------------------

    def read(self) -> None:
        """Wait for messages (at most until the nearest deadline) and act on each."""
        now = time.monotonic()
        wait = max(0.0, min((w.deadline for w in self.pool._live), default=now + 1.0) - now)
        for key, _ in self.sel.select(timeout=min(wait, 1.0)):
            w: WorkerProcess = key.data
            try:
                message = receive(w.rfd)
            except (ProtocolError, OSError):
                self.died(w)
                continue
            w.deadline = time.monotonic() + self.pool.timeout_s
            if isinstance(message, Ready):
                self.started(w)
            elif isinstance(message, (Segment, Done, Failed)) and w.task is not None and message.id == w.task.id:
                self.answered(w, w.task, message)
            # anything else: a Tick (progress: the deadline moved above), or a stale answer to an ended task

    def started(self, w: WorkerProcess) -> None:
        w.ready = True
        w.deadline = float("inf")
        self.start_failures = 0
        with contextlib.suppress(OSError):  # if it died, the read side reports it
            w.send(Config(self.pool.spec))

    def answered(self, w: WorkerProcess, task: Task, message: Segment | Done | Failed) -> None:
        self.pool._emit(self.out, self.pool._event(task, message))
        if isinstance(message, Segment):
            return
        w.task = None
        w.deadline = float("inf")
        w.tasks_done += 1
        self.remaining -= 1
        if (isinstance(message, Failed) and message.oom) or w.tasks_done >= self.pool.recycle_after:
            self.retire(w, kill=False)

    def died(self, w: WorkerProcess) -> None:
        """`w` closed its pipe or broke the protocol: it is gone, and so is the file it was decoding."""
        task = w.task
        tail = w.log_tail()
        code = self.retire(w, kill=False)
        if not w.ready:
            self.failed_start(tail or f"exit status {code}")
        if task is not None:
            self.remaining -= 1
            self.pool._emit(self.out, FileFailed(task.path, "failed", death_reason(code, tail)))

    # -- timeouts ---------------------------------------------------------------------------------------------

    def time_out(self) -> None:
        """Kill a busy worker silent for too long, or a worker that does not start."""
        now = time.monotonic()
        for w in list(self.pool._live):
            if now < w.deadline:
                continue
            lost = w.task
            tail = w.log_tail()
            self.retire(w, kill=True)
            if lost is not None:
                self.remaining -= 1
                reason = f"timed out: no progress for {self.pool.timeout_s:g} s"
                self.pool._emit(self.out, FileFailed(lost.path, "failed", reason))
            elif not w.ready:
                self.failed_start(tail or f"no answer within {START_TIMEOUT_S:g} s")
