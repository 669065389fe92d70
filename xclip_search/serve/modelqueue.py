"""The model thread, shared fairly: searches go before bulk work, and tagging runs in budgeted slices.

Model work (text encoding, rerank, tagging) runs on one thread: on a CPU, concurrent forward passes only compete
for the same cores, the encoder's caches are not meant for concurrent writers, and torch keeps one OpenMP thread
team. With one plain FIFO queue, one request tagging 1,000 labels over a page of the index held that thread for
seconds and every search behind it waited (17.8 s instead of 25 ms). Here:

- jobs are **interactive** (search, warm-up) or **bulk** (a slice of a tagging request); the thread always takes
  the oldest interactive job first, so a search waits for at most the one bulk slice already running;
- a tagging request is cut into slices (`tag_paged`): first its labels' text embeddings, `TEXT_SLICE` labels
  at a time (they land in the encoder's per-string cache), then its segments, at most `SLICE_SCORES` label x
  segment scores at a time. The slices are submitted one after the other, so concurrent tagging requests take
  turns slice by slice (round robin) and none holds the thread for long. Per-segment results do not depend on
  the slicing: each segment's probabilities are a softmax over its own label scores;
- at most `MAX_BULK_REQUESTS` tagging requests are in progress at once; more are answered 429 (`ServerBusyError`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from functools import partial
from typing import TypeVar

from ..errors import ServerBusyError

T = TypeVar("T")
SLICE_SCORES = 1_024
TEXT_SLICE = 16
MAX_BULK_REQUESTS = 4


class ModelQueue:
    """One model thread with two queues (interactive first) and a cap on concurrent bulk requests."""

    def __init__(self, *, max_bulk_requests: int = MAX_BULK_REQUESTS, name: str = "xclip-model") -> None:
        self._cond = threading.Condition()
        self._interactive: deque[tuple[Callable[[], object], Future[object]]] = deque()
        self._bulk: deque[tuple[Callable[[], object], Future[object]]] = deque()
        self._closed = False
        self._bulk_slots = threading.BoundedSemaphore(max_bulk_requests)
        self.max_bulk_requests = max_bulk_requests
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def run(self, work: Callable[[], T], *, bulk: bool = False) -> T:
        """Run `work` on the model thread and return its result (or raise its exception)."""
        future: Future[object] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the model queue is shut down")
            (self._bulk if bulk else self._interactive).append((work, future))
            self._cond.notify()
        return future.result()  # type: ignore[return-value]

    def tag_paged(
        self,
        page: Callable[[list[str], int, int], list[T]],
        labels: list[str],
        *,
        offset: int,
        limit: int,
    ) -> list[T]:
        """``page(labels, start, count)`` (one page of tagged segments) as bulk work in slices covering
        ``[offset, offset + limit)`` (see the module docstring); the slices' results, in order."""
        with self._bulk_slot():
            if limit <= 0:
                return []
            if len(labels) > TEXT_SLICE:
                for a in range(0, len(labels), TEXT_SLICE):  # warms the encoder's text cache, a slice at a time
                    self.run(partial(page, labels[a : a + TEXT_SLICE], offset, 1), bulk=True)
            step = max(1, SLICE_SCORES // max(1, len(labels)))
            out: list[T] = []
            start, end = offset, offset + limit
            while start < end:
                count = min(step, end - start)
                got = self.run(partial(page, labels, start, count), bulk=True)
                out.extend(got)
                if len(got) < count:  # past the last segment
                    break
                start += count
            return out

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
                    work, future = self._interactive.popleft()
                elif self._bulk:
                    work, future = self._bulk.popleft()
                else:
                    return  # closed and drained
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(work())
            except BaseException as exc:
                future.set_exception(exc)

    def shutdown(self) -> None:
        """Finish the queued jobs, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
