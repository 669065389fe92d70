"""One-off decodes in the indexer's isolated decode workers: a frame for the server (on-demand thumbnails), a
file's sound for speech transcription (`audio`, from the indexing run).

The server must not decode videos in its own process: one hostile file could crash it or exhaust its memory.
`FrameJobs` keeps a few `indexer.worker` processes (a fresh interpreter without torch, address space capped by
``memory_mb``, no core dumps, killed with their parent) and hands each of them one task at a time:

- a request waits for an idle worker (at most `workers` decodes at once; the others queue, for at most
  `timeout_s`, then count as undecodable);
- a worker that does not answer within `timeout_s` is killed (SIGKILL) and the frame counts as undecodable
  (an audio decode sends progress while it works: the clock restarts with each);
- a worker that dies (segfault, abort, out of memory) costs that frame only; a fresh one is started for the
  next request. A worker that cannot start at all makes every frame undecodable (None), never an exception.

Workers are started by one long-lived thread, because their death signal (PR_SET_PDEATHSIG) fires when the
*thread* that started them ends (request threads come and go).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import queue
import select
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from xclip_search.errors import VideoError

from .audio import MAX_AUDIO_S
from .pool import DEFAULT_MEMORY_MB
from .protocol import Audio, AudioTask, Failed, Frame, FrameTask, Message, ProtocolError, Ready, Tick, receive
from .workerproc import START_TIMEOUT_S, WorkerProcess, death_reason, worker_env

DEFAULT_FRAME_TIMEOUT_S = 30.0


class FrameJobs:
    """A small pool of decode workers answering one-frame thumbnail requests (thread-safe)."""

    def __init__(
        self,
        workers: int = 2,
        *,
        timeout_s: float = DEFAULT_FRAME_TIMEOUT_S,
        memory_mb: int = DEFAULT_MEMORY_MB,
    ) -> None:
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self._slots: queue.Queue[WorkerProcess | None] = queue.Queue()
        for _ in range(max(1, workers)):
            self._slots.put(None)  # a slot without a process: one is started on first use
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._live: set[WorkerProcess] = set()
        self._closed = False
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._spawner: concurrent.futures.ThreadPoolExecutor | None = None

    def thumbnail(self, path: str, frame: int, fps: float | None) -> bytes | None:
        """The JPEG of frame `frame` of `path` decoded in a worker, or None (undecodable, timed out, crashed)."""
        answer = self._request(lambda tid: FrameTask(tid, path, int(frame), fps))
        return answer.jpeg if isinstance(answer, Frame) else None

    def audio(self, path: str, max_seconds: float = MAX_AUDIO_S) -> Audio:
        """`path`'s sound (16 kHz mono int16, `indexer.audio`) decoded in a worker; raises `VideoError` with the
        reason when it cannot be decoded, the worker timed out (no progress for `timeout_s`) or died."""
        answer = self._request(lambda tid: AudioTask(tid, path, max_seconds))
        if isinstance(answer, Audio):
            return answer
        raise VideoError(answer if isinstance(answer, str) else f"{path}: no answer from the decoder")

    def _request(self, make: Callable[[int], FrameTask | AudioTask]) -> Message | str:
        """Hand one task to an idle worker; its answer (`Frame`, `Audio`) or why there is none."""
        try:
            worker = self._slots.get(timeout=self.timeout_s)
        except queue.Empty:  # every worker busy for a whole timeout: give up rather than pile up threads
            return f"every decode worker stayed busy for {self.timeout_s:g} s"
        try:
            if worker is not None and worker.proc.poll() is not None:  # died while idle: start another
                self._retire(worker, kill=False)
                worker = None
            if worker is None:
                worker = self._start()
            if worker is None:
                return "the decoder process could not start"
            answer, worker = self._ask(worker, make(next(self._ids)))
            return answer
        finally:
            self._slots.put(worker)

    def pids(self) -> list[int]:
        """The process ids of the running workers (tests, diagnostics)."""
        with self._lock:
            return [w.proc.pid for w in self._live]

    def close(self) -> None:
        """Stop every worker (server shutdown); later requests get None."""
        with self._lock:
            self._closed = True
            live, self._live = list(self._live), set()
        for w in live:
            w.close()
        if self._spawner is not None:
            self._spawner.shutdown()
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- internals -------------------------------------------------------------------------------------------

    def _start(self) -> WorkerProcess | None:
        with self._lock:
            if self._closed:
                return None
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="xclip-search-frames-")
            if self._spawner is None:
                self._spawner = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="frame-spawner")
            tmp, spawner = Path(self._tmp.name), self._spawner
        try:
            worker = spawner.submit(WorkerProcess, tmp, worker_env(self.memory_mb, 0)).result()
        except OSError:
            return None
        message = self._read(worker, START_TIMEOUT_S)
        if not isinstance(message, Ready):
            self._retire(worker, kill=True)
            return None
        worker.ready = True
        with self._lock:
            self._live.add(worker)
        return worker

    def _ask(self, worker: WorkerProcess, task: FrameTask | AudioTask) -> tuple[Message | str, WorkerProcess | None]:
        """Send `task` and wait for its answer; a `Tick` (progress) restarts the clock. A failure is its reason."""
        try:
            worker.send(task)
        except OSError:
            self._retire(worker, kill=True)
            return "the decoder process could not be reached", None
        deadline = time.monotonic() + self.timeout_s
        while True:
            message = self._read(worker, max(0.0, deadline - time.monotonic()))
            if message is None:  # timed out or died: this task is lost, the worker goes
                alive = worker.proc.poll() is None
                tail = worker.log_tail()
                self._retire(worker, kill=True)
                if alive:
                    return f"timed out: no progress for {self.timeout_s:g} s", None
                return death_reason(worker.proc.returncode, tail), None
            if isinstance(message, Tick) and message.id == task.id:
                deadline = time.monotonic() + self.timeout_s
            elif isinstance(message, (Frame, Audio)) and message.id == task.id:
                return message, worker
            elif isinstance(message, Failed) and message.id == task.id:
                if message.oom:
                    self._retire(worker, kill=False)
                    return f"out of memory (worker limit {self.memory_mb} MB)", None
                return message.reason, worker
            # anything else (a stale answer) is not this task's answer: keep reading

    @staticmethod
    def _read(worker: WorkerProcess, timeout: float) -> Message | None:
        """The worker's next message, or None when it says nothing within `timeout` seconds or has died."""
        try:
            readable, _, _ = select.select([worker.rfd], [], [], timeout)
            if not readable:
                return None
            return receive(worker.rfd)
        except (ProtocolError, OSError, ValueError):
            return None

    def _retire(self, worker: WorkerProcess, *, kill: bool) -> None:
        with self._lock:
            self._live.discard(worker)
        if kill:
            worker.kill()
        else:
            worker.reap()
        with contextlib.suppress(OSError):
            worker.log_path.unlink(missing_ok=True)
