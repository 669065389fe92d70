"""What the HTTP routes call: one `Index`, kept on the newest published generation *between* requests.

The server has no engine of its own: every search, query by example, tagging call and catalog read goes through
the same `Index` methods the command line and the Python API use, with the same `SearchFilter`, so the three
faces give the same answers (tests/test_faces_agree.py). What this module adds is only what a long-running
process needs:

- `pin` moves the index to the newest published generation when the manifest changed since the last request;
  each `Index` call then reads the one snapshot it started with, so a concurrent ``xclip-search index`` run can
  publish any number of generations without a request ever seeing half of one;
- model work (text encoding, rerank, tagging) runs on one model thread shared fairly (`ModelQueue`): searches go
  before bulk work and tagging runs in budgeted slices, so one expensive request cannot stall searches; the cost
  of a request is checked first (`limits`: 413 when too large). Catalog reads and media run on the request
  threads;
- the engine's stage timings go to the Prometheus histograms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..errors import ClientGoneError, NotFoundError, XClipSearchError
from ..index import Index, SearchFilter, SearchHit, SearchResults, SegmentRow, Shot, VideoListing, VideoRow
from .limits import check_search_cost, check_tag_cost
from .media import PathGuard, roots_from_runs
from .metrics import Metrics
from .modelqueue import BULK_THREADS, ModelQueue

T = TypeVar("T")
#: How often a search waiting for the model thread checks that its client is still there (seconds): a queued
#: search's wait is a few searches long (~20-60 ms each), so a 20 ms poll drops it before its turn.
GONE_POLL_S = 0.02


def _retrieved(done: asyncio.Future[Any]) -> None:
    """Read the outcome of a search nobody waits for any more, so asyncio does not log it as never retrieved."""
    if not done.cancelled():
        done.exception()


def render_json(value: Any) -> bytes:
    """JSON as Starlette's `JSONResponse` renders it (UTF-8, compact, no NaN)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


@dataclass(frozen=True)
class RenderedTags:
    """A tagging answer whose per-segment entries were rendered to JSON inside the model thread's slices
    (`modelqueue`): the request thread only joins bytes, so it never competes with a search for the GIL."""

    fields: dict[str, Any]
    entries_key: str
    entries: list[bytes]

    def body(self, **extra: Any) -> bytes:
        """The whole answer: `fields`, `extra`, then the entries under `entries_key`."""
        head = render_json({**self.fields, **extra, self.entries_key: []})
        return head[:-2] + b",".join(self.entries) + b"]}"

    def to_dict(self) -> dict[str, Any]:
        """The answer as a dict (tests, and callers in this process)."""
        return dict(json.loads(self.body()))


@dataclass(frozen=True)
class SearchOptions:
    """How to search (the `Index.search` keywords a request may set)."""

    top_k: int = 10
    candidates: int | None = None
    rerank: bool = True
    per_video: bool = True
    where: SearchFilter | None = None
    min_score: float | None = None
    merge: bool = True
    match: str | None = None  # visual, speech or both (None: both when the index holds any speech)


@dataclass
class SearchOutcome:
    generation: int
    hits: list[SearchHit]
    timings: dict[str, float] = field(default_factory=dict)
    example: dict[str, Any] | None = None


class IndexService:
    """The server's single view of one index directory (see the module docstring)."""

    def __init__(self, index: Index, metrics: Metrics | None = None, *, search_threads: int | None = None) -> None:
        self.index = index
        self.metrics = metrics or Metrics()
        self._lock = threading.RLock()
        self._guard: PathGuard | None = None
        self._guard_generation = -1
        self._gauged = -1  # the generation the index gauges describe
        self._segments = 0  # live segments in that generation (the gauge; bounds a search's rerank cost)
        self.refresh_error: XClipSearchError | None = None  # why the newest manifest could not be read (health)
        for_search = search_threads or Index.model_threads()  # torch's default: all cores

        def threads(bulk: bool) -> None:
            Index.set_model_threads(BULK_THREADS if bulk else for_search)

        self._model = ModelQueue(threads=threads)  # one model thread, shared fairly (see modelqueue)
        self.pin()

    @property
    def directory(self) -> Path:
        return self.index.directory

    # -- generations ---------------------------------------------------------------------------------------

    def pin(self) -> int:
        """Move to the newest published generation if the manifest changed; return the generation to read."""
        with self._lock:
            try:
                moved = self.index.refresh()
                self.refresh_error = None
            except XClipSearchError as exc:
                moved = False  # keep serving the last good snapshot; the next request retries
                self.refresh_error = exc
            generation = self.index.generation
            if moved:
                self.metrics.refreshes.inc()
                if self.index.model_loaded:  # warm: load the new snapshot's segment map off the request path
                    threading.Thread(target=self._load_layout, name="xclip-layout", daemon=True).start()
            if generation != self._gauged:
                self._gauged = generation
                self.metrics.generation.set(generation)
                self._segments = self.index.count_segments(generation=generation)
                self.metrics.segments.set(self._segments)
            return generation

    def _load_layout(self) -> None:
        """Best effort: until it is loaded, searches read their hits' videos from the catalog instead (the same
        answers), and a failure here shows up in the next search, with its own error."""
        with contextlib.suppress(Exception):
            _ = self.index.engine.layout

    def guard(self) -> PathGuard:
        """Which catalog paths may be opened: inside the roots of the recorded indexing runs."""
        generation = self.pin()
        with self._lock:
            if self._guard is None or self._guard_generation != generation:
                self._guard = PathGuard(roots_from_runs((r.roots_json, r.paths) for r in self.index.recorded_roots()))
                self._guard_generation = generation
            return self._guard

    # -- model ---------------------------------------------------------------------------------------------

    def warm(self) -> None:
        """Load the model now (the first search would otherwise pay for it)."""
        self._on_model_thread(self.index.load_model)

    def _on_model_thread(self, work: Callable[[], T]) -> T:
        """Run model work on the service's one model thread: requests queue there instead of competing for the
        same cores, and torch keeps one OpenMP thread team instead of starting one per request thread. Interactive
        work (search, warm-up) goes before queued tagging slices."""
        return self._model.run(work)

    def _queued_on_model_thread(self, work: Callable[[], T]) -> tuple[T, float]:
        """`_on_model_thread`, and how long the work waited for the thread (a running tagging slice, other
        searches): the ``queue`` timing of a search, which shows what sharing the model thread costs it."""
        submitted = time.perf_counter()

        def timed() -> tuple[T, float]:
            waited = time.perf_counter() - submitted
            return work(), waited

        return self._model.run(timed)

    @property
    def model_loaded(self) -> bool:
        return self.index.model_loaded

    def _outcome(
        self, results: SearchResults, queued: float, started: float, example: dict[str, Any] | None = None
    ) -> SearchOutcome:
        """The engine's stage timings, the wait for the model thread (``queue``), and the request's own total
        (that wait included)."""
        timings = {"queue": queued, **results.timings}
        timings["total"] = time.perf_counter() - started
        for stage, seconds in timings.items():
            self.metrics.stage.labels(stage=stage).observe(seconds)
        return SearchOutcome(results.generation, list(results), timings, example)

    # -- search --------------------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        top_k: int = 10,
        candidates: int | None = None,
        rerank: bool = True,
        per_video: bool = True,
        where: SearchFilter | None = None,
        min_score: float | None = None,
        merge: bool = True,
        match: str | None = None,
    ) -> SearchOutcome:
        """`Index.search` on the newest generation, with the engine's stage timings."""
        options = SearchOptions(top_k, candidates, rerank, per_video, where, min_score, merge, match)
        started = time.perf_counter()
        return self._outcome(*self._model.run(self._search_job(query, options)), started)

    async def search_while_connected(
        self, query: str, options: SearchOptions, gone: Callable[[], Awaitable[bool]]
    ) -> SearchOutcome:
        """`search` for a client that may leave before its answer (search as you type aborts the previous
        request on every keystroke that follows a pause): the request waits for the model thread without holding
        a thread of its own, and a search that has not started when `gone()` turns true is taken off the queue
        instead of holding the model thread for the clients still waiting. Raises `ClientGoneError` then."""
        started = time.perf_counter()
        job = self._model.submit(self._search_job(query, options))
        waiting = asyncio.wrap_future(job)
        while not waiting.done():
            await asyncio.wait({waiting}, timeout=GONE_POLL_S)
            if not waiting.done() and await gone():
                outcome = "skipped" if job.cancel() else "discarded"
                self.metrics.abandoned.labels(outcome=outcome).inc()
                waiting.add_done_callback(_retrieved)  # a search still running ends unread: no asyncio warning
                raise ClientGoneError("The client left before the search finished")
        return self._outcome(*waiting.result(), started)

    def _search_job(self, query: str, o: SearchOptions) -> Callable[[], tuple[SearchResults, float]]:
        """The model-thread work of one search: move to the newest generation, check the cost, search; with the
        time it waited for the thread."""
        submitted = time.perf_counter()

        def work() -> tuple[SearchResults, float]:
            queued = time.perf_counter() - submitted
            self.pin()
            check_search_cost(o.top_k, o.candidates, o.rerank, self._segments)
            found = self.index.search(
                query,
                top_k=o.top_k,
                candidates=o.candidates,
                rerank=o.rerank,
                per_video=o.per_video,
                where=o.where,
                min_score=o.min_score,
                merge=o.merge,
                match=o.match,
            )
            return found, queued

        return work

    def similar(
        self,
        segment_id: int,
        *,
        top_k: int = 10,
        candidates: int | None = None,
        per_video: bool = True,
        include_same_video: bool = False,
        where: SearchFilter | None = None,
    ) -> SearchOutcome:
        """Query by example (`Index.similar`): moments whose ``v`` is nearest to an indexed segment's."""
        started = time.perf_counter()
        self.pin()

        def work() -> tuple[SearchResults, dict[str, Any]]:
            example = self.index.example_segment(segment_id)
            found = self.index.similar(
                example,
                top_k=top_k,
                candidates=candidates,
                per_video=per_video,
                where=where,
                include_source=include_same_video,
            )
            return found, example.source

        (results, source), queued = self._queued_on_model_thread(work)
        return self._outcome(results, queued, started, source)

    # -- concepts and feedback (Index.refine, Index.search_concept, Index.save_feedback) --------------------

    def refine(
        self,
        query: str,
        positive: Sequence[int],
        negative: Sequence[int],
        *,
        top_k: int = 10,
        per_video: bool = True,
        where: SearchFilter | None = None,
    ) -> SearchOutcome:
        """A search refined by results marked up and down (`Index.refine`): learned on the spot, not stored."""
        started = time.perf_counter()
        self.pin()
        results, queued = self._queued_on_model_thread(
            lambda: self.index.refine(query, positive, negative, top_k=top_k, per_video=per_video, where=where)
        )
        return self._outcome(results, queued, started)

    def search_concept(
        self,
        concept: str,
        query: str | None,
        *,
        top_k: int = 10,
        per_video: bool = True,
        where: SearchFilter | None = None,
    ) -> SearchOutcome:
        """Moments ranked by a learned concept (with `query`: fused with X-CLIP's score for it)."""
        started = time.perf_counter()
        self.pin()
        results, queued = self._queued_on_model_thread(
            lambda: self.index.search_concept(concept, query=query, top_k=top_k, per_video=per_video, where=where)
        )
        return self._outcome(results, queued, started)

    def save_concept(self, name: str, query: str, positive: Sequence[int], negative: Sequence[int]) -> dict[str, Any]:
        """Store the concept a feedback search learned, under `name` (a write operation)."""
        self.pin()
        learned = self._on_model_thread(lambda: self.index.save_feedback(name, query, positive, negative))
        return learned.row.summary()

    def concepts(self) -> list[dict[str, Any]]:
        return [row.summary() for row in self.index.concepts()]

    def forget_concept(self, name: str) -> None:
        self.index.forget(name)

    # -- tagging -------------------------------------------------------------------------------------------

    def tag_video(self, video_id: int, labels: Sequence[str], *, top: int | None = None) -> RenderedTags:
        """Every label's probability for each live segment of one video, and their mean over the video."""
        labels = self.index.check_labels(labels)
        generation = self.pin()
        video, segments = self._indexed_video(video_id, generation)
        check_tag_cost(len(labels), len(segments))
        position = {label: i for i, label in enumerate(labels)}

        def entry(seg: Any) -> tuple[bytes, np.ndarray]:
            probs = np.zeros(len(labels))
            for t in seg.labels:
                probs[position[t.label]] = t.prob
            body = {
                "segment_id": seg.segment_id,
                "start": round(seg.start, 3),
                "end": round(seg.end, 3),
                "labels": [t.to_dict() for t in seg.labels[:top]],
            }
            return render_json(body), probs

        tagged = self._tag_sliced(labels, entry, where=f"video_id={video_id}", limit=len(segments))
        mean = np.zeros(len(labels))
        for _body, probs in tagged:
            mean += probs / len(tagged)
        overall = [{"label": labels[i], "prob": float(mean[i])} for i in np.argsort(-mean, kind="stable")[:top]]
        fields = {"generation": generation, "video_id": video_id, "path": video.path, "labels": overall}
        return RenderedTags(fields, "segments", [body for body, _probs in tagged])

    def tag_index(self, labels: Sequence[str], *, top: int | None, offset: int, limit: int) -> RenderedTags:
        """One page of the whole index tagged from stored vectors (the ``tag --index`` shape, plus ids)."""
        labels = self.index.check_labels(labels)
        generation = self.pin()
        total = self.index.count_segments(generation=generation)
        check_tag_cost(len(labels), max(0, min(limit, total - offset)))

        def entry(s: Any) -> bytes:
            return render_json({"segment_id": s.segment_id, "video_id": s.video_id, **s.to_dict()})

        results = self._tag_sliced(labels, entry, top=top, offset=offset, limit=limit)
        return RenderedTags({"generation": generation, "total": total, "offset": offset}, "results", results)

    def save_tags(self, labels: Sequence[str], video_id: int | None, *, top: int | None = None) -> int:
        """Store the labels' probabilities (the `top` most probable per segment, else all) in the catalog's tags
        table, for one video or for the whole index (`Index.tag_index` with ``save``, in slices like any
        tagging); returns the number of (segment, label) rows written. Earlier tags of the same labels on those
        segments are replaced, so a search filtered on a label sees the newest."""
        labels = self.index.check_labels(labels)
        generation = self.pin()
        where = None
        if video_id is not None:
            _video, segments = self._indexed_video(video_id, generation)
            where = f"video_id={video_id}"
            count = len(segments)
        else:
            count = self.index.count_segments(generation=generation)
        check_tag_cost(len(labels), count)
        rows = self._tag_sliced(labels, lambda s: len(s.labels), top=top, where=where, limit=count, save=True)
        return sum(rows)

    def _tag_sliced(
        self,
        labels: list[str],
        entry: Callable[[Any], T],
        *,
        top: int | None = None,
        where: str | None = None,
        offset: int = 0,
        limit: int,
        save: bool = False,
    ) -> list[T]:
        """`Index.tag_index` as bulk work on the model thread in time-bounded slices (`ModelQueue.tag_paged`),
        each segment turned into its `entry` (its rendered JSON) inside the slice that tags it."""

        def warm(a: int, n: int) -> None:
            self.index.warm_texts(labels[a : a + n])

        def page(start: int, count: int) -> list[T]:
            with self.metrics.time_stage("tag"):
                found = self.index.tag_index(labels, top=top, where=where, save=save, offset=start, limit=count)
                return [entry(s) for s in found]

        return self._model.tag_paged(page, labels=len(labels), warm=warm, offset=offset, limit=limit)

    def _indexed_video(self, video_id: int, generation: int) -> tuple[VideoRow, list[SegmentRow]]:
        segments = self.index.segments_of(video_id, generation=generation)
        if not segments:
            raise NotFoundError(f"No indexed video with id {video_id} in this index")
        return self.index.video(video_id), segments

    # -- metadata ------------------------------------------------------------------------------------------

    def video(self, video_id: int) -> tuple[VideoRow, list[SegmentRow], int]:
        generation = self.pin()
        row = self.index.video(video_id)
        return row, self.index.segments_of(video_id, generation=generation), generation

    def video_shots(self, video_id: int) -> tuple[VideoRow, list[Shot], int]:
        """A video with its live segments grouped into shots (`Index.shots_of`), for the page's strip."""
        generation = self.pin()
        row = self.index.video(video_id)
        return row, self.index.shots_of(video_id, generation=generation), generation

    def subtitles_vtt(self, video_id: int) -> str:
        """A video's subtitles and transcript as WebVTT (`Index.subtitles_vtt`), for the player's track."""
        self.pin()
        return self.index.subtitles_vtt(video_id)

    def segment(self, segment_id: int) -> tuple[SegmentRow, int]:
        generation = self.pin()
        return self.index.segment(segment_id, generation=generation), generation

    def videos(
        self, *, status: str | None, name: str | None, offset: int, limit: int
    ) -> tuple[int, list[VideoListing], int]:
        generation = self.pin()
        total, rows = self.index.videos(status=status, name=name, offset=offset, limit=limit, generation=generation)
        return total, rows, generation

    def info(self) -> dict[str, Any]:
        with self._lock:
            self.pin()
            return self.index.info()

    def failures(self) -> list[VideoRow]:
        self.pin()
        return self.index.failed_videos()

    def recorded_roots(self) -> list[str]:
        self.pin()
        return [str(p) for p in roots_from_runs((r.roots_json, r.paths) for r in self.index.recorded_roots())]

    def close(self) -> None:
        self._model.shutdown()
        self.index.close()


__all__ = ["IndexService", "RenderedTags", "SearchOptions", "SearchOutcome"]
