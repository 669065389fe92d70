"""The model thread, shared fairly: searches go before bulk work, and tagging runs in budgeted slices.

Model work (text encoding, rerank, tagging) runs on one thread: on a CPU, concurrent forward passes only compete
for the same cores, the encoder's caches are not meant for concurrent writers, and torch keeps one OpenMP thread
team. With one plain FIFO queue, one request tagging 1,000 labels over a page of the index held that thread for
seconds and every search behind it waited (17.8 s instead of 25 ms). Here:

- jobs are **interactive** (search, warm-up) or **bulk** (a slice of a tagging request); the thread always takes
  the oldest interactive job first, so a search waits for at most the one bulk slice already running;
- a tagging request is cut into slices (`tag_paged`): first its labels' text embeddings (`warm`: they land in
  the encoder's per-string cache), then its segments. Text slices are sized by **time**: each is timed on the
  model thread and the next takes about `SLICE_SECONDS` (at most twice the last count and `TEXT_SLICE`
  labels), whatever the labels' length, the model's size or the machine's load. Segment slices are sized by
  count, `SLICE_SCORES` label x segment scores (one segment at least): the scorer's own chunk, so a request's
  scores do not depend on timing (the scorer's float rounding depends on how segments are batched);
- everything a tagging request computes in Python runs inside its slices, its answer's JSON included (the
  service renders each segment's entry in the slice that tags it): work on a request thread would compete with
  a running search for the GIL, and one ``json.dumps`` of a 30,000-label answer (1,000 labels over the demo
  index) holds the GIL for 170-260 ms. The slices are submitted one after the other, so concurrent tagging
  requests take turns slice by slice (round robin) and none holds the thread for long;
- bulk slices run with `BULK_THREADS` model thread (torch intra-op threads), searches with all of them (the
  `threads` hook switches when the kind of job changes, ~0.3 ms): on two cores, a tagging slice on two threads
  leaves no core for the HTTP side, and a thread team that loses one of its threads to another process waits at
  every operation's barrier (a tagging slice measured 37 ms on one thread and 1,050 ms on two on the loaded
  2-core machine; a search 11 ms and 92 ms);
- at most `MAX_BULK_REQUESTS` tagging requests are in progress at once; more are answered 429 (`ServerBusyError`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from functools import partial
from typing import TypeVar

from ..errors import ServerBusyError

T = TypeVar("T")
SLICE_SECONDS = 0.01
SLICE_SCORES = 512  # label x segment scores per segment slice: the scorer's own chunk (prompting)
TEXT_SLICE = 64
MAX_BULK_REQUESTS = 4
BULK_THREADS = 1


class SlicePacer:
    """How many items the next slice takes so that it lasts about `budget` seconds (see the module docstring).

    Starts at one item; after each slice, the measured seconds per item size the next one, growing at most
    twofold (a cheap first item must not make the second slice huge) and never past `cap`."""

    def __init__(self, cap: int, budget: float) -> None:
        self.cap = max(1, cap)
        self.budget = budget
        self.count = 1

    def record(self, count: int, seconds: float) -> None:
        fit = self.cap if seconds <= 0 else int(self.budget * count / seconds)
        self.count = max(1, min(self.cap, 2 * count, fit))


class ModelQueue:
    """One model thread with two queues (interactive first) and a cap on concurrent bulk requests."""

    def __init__(
        self,
        *,
        max_bulk_requests: int = MAX_BULK_REQUESTS,
        threads: Callable[[bool], None] | None = None,
        name: str = "xclip-model",
    ) -> None:
        """`threads(bulk)` (optional) sets the model's threads for the kind of job about to run."""
        self._cond = threading.Condition()
        self._interactive: deque[tuple[Callable[[], object], Future[object]]] = deque()
        self._bulk: deque[tuple[Callable[[], object], Future[object]]] = deque()
        self._threads = threads
        self._threads_for_bulk: bool | None = None
        self._closed = False
        self._bulk_slots = threading.BoundedSemaphore(max_bulk_requests)
        self.max_bulk_requests = max_bulk_requests
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def run(self, work: Callable[[], T], *, bulk: bool = False) -> T:
        """Run `work` on the model thread and return its result (or raise its exception)."""
        return self.submit(work, bulk=bulk).result()

    def submit(self, work: Callable[[], T], *, bulk: bool = False) -> Future[T]:
        """Queue `work` for the model thread; its future (an ``async`` caller awaits it without a thread)."""
        future: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the model queue is shut down")
            (self._bulk if bulk else self._interactive).append((work, future))  # type: ignore[arg-type]
            self._cond.notify()
        return future

    def tag_paged(
        self,
        page: Callable[[int, int], list[T]],
        *,
        labels: int,
        warm: Callable[[int, int], object] | None = None,
        offset: int,
        limit: int,
    ) -> list[T]:
        """``page(start, count)`` (the entries of `count` segments from `start`, fewer past the last one) as bulk
        work in time-bounded slices covering ``[offset, offset + limit)``, after ``warm(a, n)`` has encoded the
        request's `labels` label texts ``a .. a + n`` in slices of their own (see the module docstring)."""
        with self._bulk_slot():
            if limit <= 0:
                return []
            if warm is not None:
                pacer = SlicePacer(TEXT_SLICE, SLICE_SECONDS)
                a = 0
                while a < labels:
                    n = min(pacer.count, labels - a)
                    self._timed_slice(partial(warm, a, n), n, pacer)
                    a += n
            step = max(1, SLICE_SCORES // max(1, labels))
            out: list[T] = []
            start, end = offset, offset + limit
            while start < end:
                count = min(step, end - start)
                got = self.run(partial(page, start, count), bulk=True)
                out.extend(got)
                if len(got) < count:  # past the last segment
                    break
                start += count
            return out

    def _timed_slice(self, work: Callable[[], T], count: int, pacer: SlicePacer) -> T:
        """One bulk slice, timed on the model thread (its queueing is not its cost) to size the next."""

        def timed() -> tuple[T, float]:
            started = time.perf_counter()
            result = work()
            return result, time.perf_counter() - started

        result, seconds = self.run(timed, bulk=True)
        pacer.record(count, seconds)
        return result

    def run_bulk(self, work: Callable[[], T]) -> T:
        """One bulk job that cannot be sliced (it counts as a tagging request for the 429 cap)."""
        with self._bulk_slot():
            return self.run(work, bulk=True)

    @contextmanager
    def _bulk_slot(self) -> Iterator[None]:
        if not self._bulk_slots.acquire(blocking=False):
            raise ServerBusyError(
                f"The server is busy: {self.max_bulk_requests} tagging requests are already running",
                hint="Retry in a moment.",
            )
        try:
            yield
        finally:
            self._bulk_slots.release()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._interactive or self._bulk or self._closed):
                    self._cond.wait()
                if self._interactive:
                    (work, future), bulk = self._interactive.popleft(), False
                elif self._bulk:
                    (work, future), bulk = self._bulk.popleft(), True
                else:
                    return  # closed and drained
            if not future.set_running_or_notify_cancel():
                continue
            try:
                if self._threads is not None and bulk is not self._threads_for_bulk:
                    self._threads(bulk)
                    self._threads_for_bulk = bulk
                future.set_result(work())
            except BaseException as exc:
                future.set_exception(exc)

    def shutdown(self) -> None:
        """Finish the queued jobs, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
