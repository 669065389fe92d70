"""Decode workers: files are decoded and preprocessed in separate processes, in parallel with the model.

Processes are spawned (not forked: the parent holds torch threads and open databases) and import no torch.
A decode error inside a worker comes back as that file's failure. If a worker process dies (a decoder crash
takes the whole pool down), the files that were in flight are retried one by one in a fresh pool, so only the
file that really kills a worker is marked failed.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from xclip_search.errors import VideoError

from .extract import Extracted, ExtractSpec, extract


@dataclass
class DecodeOutcome:
    """The result for one file: `extracted` on success, `error` (one line) on failure."""

    path: str
    extracted: Extracted | None = None
    error: str | None = None


def _work(path: str, spec: ExtractSpec) -> DecodeOutcome:
    try:
        return DecodeOutcome(path, extracted=extract(path, spec))
    except VideoError as exc:
        return DecodeOutcome(path, error=str(exc))
    except MemoryError:
        return DecodeOutcome(path, error="out of memory while decoding")
    except Exception as exc:  # a bug or an unexpected library error must cost this file only
        return DecodeOutcome(path, error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class DecodePool:
    """Runs `extract` over many files with `workers` processes (0 = in this process, for small jobs)."""

    def __init__(self, spec: ExtractSpec, workers: int | None = None) -> None:
        self.spec = spec
        self.workers = default_workers() if workers is None else workers
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, paths: Iterable[str], *, in_flight: int | None = None) -> Iterator[DecodeOutcome]:
        """Yield one outcome per path, in completion order; at most `in_flight` files are held at once."""
        if self.workers == 0:
            for path in paths:
                yield _work(path, self.spec)
            return
        limit = in_flight or 2 * self.workers
        queue = deque(paths)
        running: dict[Future[DecodeOutcome], str] = {}
        while queue or running:
            while queue and len(running) < limit:
                path = queue.popleft()
                running[self._executor().submit(_work, path, self.spec)] = path
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            broken: list[str] = []
            for fut in done:
                path = running.pop(fut)
                try:
                    yield fut.result()
                except BrokenProcessPool:
                    broken.append(path)
            if broken:
                broken.extend(running.values())
                running.clear()
                self._reset()
                yield from self._isolate(broken)

    def _reset(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _isolate(self, paths: list[str]) -> Iterator[DecodeOutcome]:
        """Retry files that were in flight when a worker died, alone, to find the one that kills workers."""
        for path in paths:
            try:
                yield self._executor().submit(_work, path, self.spec).result()
            except BrokenProcessPool:
                self._reset()
                yield DecodeOutcome(path, error="the decoder process crashed on this file")
