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

import base64
import binascii
import concurrent.futures
import contextlib
import os
import queue
import selectors
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xclip_search.errors import XClipSearchError

from .extract import Extraction, ExtractSpec, FileSummary, SegmentCrops
from .protocol import ProtocolError, read_message
from .segments import SegmentPlan
from .workerproc import START_TIMEOUT_S, Task, WorkerProcess, death_reason

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
    probe: dict[str, Any]
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


class WorkerStartError(XClipSearchError):
    """Decode worker processes cannot start (a broken installation), so nothing can be decoded."""


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
            return (event for path in paths for event in _inline(path, self.spec, mode))
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
        env = dict(os.environ)
        paths = [p for p in sys.path if p]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["XCLIP_SEARCH_WORKER_MEMORY_MB"] = str(self.memory_mb)
        env["XCLIP_SEARCH_WORKER_NICE"] = str(self.nice)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = "1"
        env["MALLOC_ARENA_MAX"] = "2"
        for var in ("XCLIP_SEARCH_CRASH_AT", "XCLIP_SEARCH_PAUSE_AT"):  # crash points are for the writer process
            env.pop(var, None)
        return env

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

    def _spawn(self, sel: selectors.BaseSelector) -> WorkerProcess:
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
        sel.register(w.rfd, selectors.EVENT_READ, w)
        return w

    def _retire(self, sel: selectors.BaseSelector, w: WorkerProcess, *, kill: bool) -> int | None:
        sel.unregister(w.rfd)
        self._live.remove(w)
        if kill:
            w.kill()
            code = w.proc.returncode
        else:
            code = w.reap()
        return code

    def warm_up(self) -> None:
        """Start the workers and wait until they are ready (so timings that follow exclude start-up)."""
        if self.workers == 0:
            return
        for _ in self.run([], mode="probe"):
            pass

    def _loop(self, paths: list[str], mode: str, out: queue.Queue[PoolEvent | BaseException | None]) -> None:
        pending = deque(Task(i, p, mode) for i, p in enumerate(paths, start=self._next_id))
        self._next_id += len(paths)
        remaining = len(pending)
        start_failures = 0
        sel = selectors.DefaultSelector()
        for w in self._live:
            sel.register(w.rfd, selectors.EVENT_READ, w)
        config = {"type": "config", "spec": self.spec.to_dict()}

        def failed_start(w: WorkerProcess, detail: str) -> None:
            nonlocal start_failures
            start_failures += 1
            if start_failures >= _MAX_START_FAILURES:
                raise WorkerStartError(
                    f"Decode worker processes cannot start: {w.log_tail() or detail}",
                    hint="Check that PyAV and decord import in this Python environment.",
                )

        try:
            while not self._stop.is_set():
                # Keep enough workers: replace those that died, were recycled or were killed (with no paths,
                # `warm_up`: start them all, then wait until they are ready).
                target = min(self.workers, remaining) if paths else self.workers
                while len(self._live) < target:
                    self._spawn(sel)
                starting = [w for w in self._live if not w.ready]
                if not remaining and not starting:
                    break
                for w in self._live:
                    if w.ready and w.task is None and pending:
                        task = pending.popleft()
                        w.task = task
                        w.deadline = time.monotonic() + self.timeout_s
                        with contextlib.suppress(OSError):  # if it died, the read side reports it
                            w.send({"type": "task", "id": task.id, "path": task.path, "mode": task.mode})
                now = time.monotonic()
                wait = max(0.0, min((w.deadline for w in self._live), default=now + 1.0) - now)
                for key, _ in sel.select(timeout=min(wait, 1.0)):
                    w = key.data
                    try:
                        header, array = read_message(w.rfd)
                    except (ProtocolError, OSError):
                        task = w.task
                        code = self._retire(sel, w, kill=False)
                        if not w.ready:
                            failed_start(w, f"exit status {code}")
                        if task is not None:
                            remaining -= 1
                            self._emit(out, FileFailed(task.path, "failed", death_reason(code, w.log_tail())))
                        w.log_path.unlink(missing_ok=True)
                        continue
                    w.deadline = time.monotonic() + self.timeout_s
                    kind = header.get("type")
                    if kind == "ready":
                        w.ready = True
                        w.deadline = float("inf")
                        start_failures = 0
                        with contextlib.suppress(OSError):  # if it died, the read side reports it
                            w.send(config)
                        continue
                    task = w.task
                    if task is None or header.get("id") != task.id:
                        continue
                    if kind == "tick":
                        continue
                    if kind == "segment":
                        seq, f0, f1, s0, s1 = header["plan"]
                        plan = SegmentPlan(int(seq), int(f0), int(f1), float(s0), float(s1))
                        assert array is not None
                        thumb = _thumbnail_of(header)
                        self._emit(out, SegmentReady(task.path, int(header["attempt"]), plan, array, thumb))
                        continue
                    w.task = None
                    w.deadline = float("inf")
                    w.tasks_done += 1
                    remaining -= 1
                    self._emit(out, self._result(task, kind, header))
                    if header.get("oom") or w.tasks_done >= self.recycle_after:
                        self._retire(sel, w, kill=False)
                        w.log_path.unlink(missing_ok=True)
                # Timeouts: a busy worker silent for too long, or a worker that does not start.
                now = time.monotonic()
                for w in list(self._live):
                    if now < w.deadline:
                        continue
                    lost = w.task
                    self._retire(sel, w, kill=True)
                    w.log_path.unlink(missing_ok=True)
                    if lost is not None:
                        remaining -= 1
                        reason = f"timed out: no progress for {self.timeout_s:g} s"
                        self._emit(out, FileFailed(lost.path, "failed", reason))
                    elif not w.ready:
                        failed_start(w, f"no answer within {START_TIMEOUT_S:g} s")
        finally:
            # Files still in flight will never be consumed (the consumer stopped): their workers go.
            for w in [w for w in self._live if w.task is not None]:
                self._retire(sel, w, kill=True)
                w.log_path.unlink(missing_ok=True)
            for w in self._live:
                sel.unregister(w.rfd)
            sel.close()

    def _emit(self, out: queue.Queue[PoolEvent | BaseException | None], event: PoolEvent) -> None:
        """Hand `event` to the consumer; while it is behind, the workers' timeout clocks stop."""
        waited = self._put(out, event)
        if waited > 0.05:
            for w in self._live:
                w.deadline += waited

    def _result(self, task: Task, kind: Any, header: dict[str, Any]) -> PoolEvent:
        warnings = int(header.get("log_lines", 0))
        log = [str(x) for x in header.get("log") or []]
        if kind == "done":
            summary = FileSummary.from_dict(header["summary"]) if header.get("summary") else None
            if summary is not None:
                warnings += summary.warnings
            return FileDone(task.path, summary, header.get("probe") or {}, header.get("hash"), warnings, log)
        status = str(header.get("status", "failed"))
        reason = str(header.get("reason", "unknown error"))
        if header.get("oom"):
            reason = f"out of memory (worker limit {self.memory_mb} MB)"
        elif log and status == "failed" and log[-1] not in reason:
            reason = f"{reason} (decoder log: {log[-1][:200]})"
        return FileFailed(task.path, status, reason, header.get("hash"), warnings)


def _thumbnail_of(header: dict[str, Any]) -> bytes | None:
    """The segment's JPEG thumbnail from a worker's header (base64); a damaged one is dropped, not fatal."""
    text = header.get("thumb")
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return None


def _inline(path: str, spec: ExtractSpec, mode: str) -> Iterator[PoolEvent]:
    """Decode in this process (``workers=0``): same events, no isolation; for tests and tiny jobs."""
    from xclip_search.errors import VideoError, VideoLimitError

    from .fingerprint import content_hash

    digest: str | None = None
    try:
        digest = content_hash(path)
        job = Extraction(path, spec)
        if mode == "probe":
            yield FileDone(path, None, job.probe.to_dict(), digest, 0)
            return
        segments: list[SegmentCrops] = []
        for seg in job.segments():
            segments.append(seg)
        for seg in segments:
            yield SegmentReady(path, seg.attempt, seg.plan, seg.crops, seg.thumbnail)
        assert job.summary is not None
        yield FileDone(path, job.summary, job.probe.to_dict(), digest, job.summary.warnings)
    except VideoLimitError as exc:
        yield FileFailed(path, "skipped", str(exc), digest)
    except VideoError as exc:
        yield FileFailed(path, "failed", str(exc), digest)
    except OSError as exc:
        yield FileFailed(path, "failed", f"cannot read the file: {exc.strerror or exc}", digest)
