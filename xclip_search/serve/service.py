"""What the HTTP routes call: one `Index`, kept on the newest published generation *between* requests.

Every operation starts by pinning a snapshot (`pin`): if the manifest file changed since the last request, the
index moves to the new generation first; the request then reads only that snapshot, so a concurrent
``xclip-search index`` run can publish any number of generations without a request ever seeing half of one.
Model work (text encoding, rerank, tagging) runs on one dedicated thread: on a CPU, concurrent forward passes only
compete for the same cores, the encoder's caches are not meant for concurrent writers, and torch keeps a single
OpenMP thread team. Catalog reads and media run on the request threads.

This module also adds what only the server needs on top of `Index`: stage timings, the web form's filters,
per-video tagging and paging of whole-index tagging; saving tags goes through the catalog's tags table, as
``xclip-search tag --save`` does.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from ..errors import InvalidArgumentError, XClipSearchError
from ..index import Index
from ..search import MAX_TOP_K, SearchEngine, SearchHit, check_search_args
from ..store.manifest import MANIFEST_NAME
from ..store.snapshot import Candidate, Snapshot
from ..tagging import MAX_LABELS, LabelScore
from . import catalog_views as views
from .catalog_views import SearchFilters
from .limits import check_search_cost, check_tag_cost
from .media import PathGuard, roots_from_runs
from .metrics import Metrics
from .modelqueue import ModelQueue

MAX_CANDIDATES = 100_000
T = TypeVar("T")
# Which calls of SearchEngine's collaborators make up each search stage ("attr:method" times a nested call).
_SNAPSHOT_STAGES = {"coarse": "first_stage", "vectors": "gather:gather"}


class NotFoundError(XClipSearchError):
    """An id names no live video or segment in the generation the request reads."""


class UnsupportedError(XClipSearchError):
    """The operation needs something this build of the engine does not have yet."""


@dataclass
class SearchOutcome:
    generation: int
    hits: list[SearchHit]
    timings: dict[str, float] = field(default_factory=dict)
    example: dict[str, Any] | None = None


class IndexService:
    """The server's single view of one index directory (see the module docstring)."""

    def __init__(self, index: Index, metrics: Metrics | None = None) -> None:
        self.index = index
        self.metrics = metrics or Metrics()
        self._lock = threading.RLock()
        self._manifest_key: tuple[int, int, int] | None = None
        self._components: tuple[Any, Any] | None = None
        self._guard: PathGuard | None = None
        self._guard_generation = -1
        self.refresh_error: XClipSearchError | None = None  # why the newest manifest could not be read (health)
        self._model = ModelQueue()  # one model thread, shared fairly (see modelqueue)
        self.pin()

    @property
    def directory(self) -> Path:
        return self.index.directory

    # -- generations ---------------------------------------------------------------------------------------

    def pin(self) -> Snapshot:
        """Move to the newest published generation if the manifest changed; return the snapshot to read."""
        with self._lock:
            try:
                st = os.stat(self.directory / MANIFEST_NAME)
                key = (st.st_ino, st.st_mtime_ns, st.st_size)
            except OSError:
                key = None
            if key is not None and key != self._manifest_key:
                # Record the key first: a manifest replaced after our stat is then seen as a change next time.
                previous = self._manifest_key
                self._manifest_key = key
                try:
                    if self.index.refresh() and previous is not None:
                        self.metrics.refreshes.inc()
                    self.refresh_error = None
                except XClipSearchError as exc:
                    self._manifest_key = previous  # keep serving the last good snapshot; retry next request
                    self.refresh_error = exc
                snap = self.index.snapshot
                self.metrics.generation.set(snap.generation)
                self.metrics.segments.set(snap.catalog.live_segment_count(snap.generation))
            return self.index.snapshot

    def guard(self) -> PathGuard:
        """Which catalog paths may be opened: inside the roots of the recorded indexing runs."""
        snap = self.pin()
        with self._lock:
            if self._guard is None or self._guard_generation != snap.generation:
                self._guard = PathGuard(roots_from_runs(views.recorded_roots(snap.catalog)))
                self._guard_generation = snap.generation
            return self._guard

    # -- model ---------------------------------------------------------------------------------------------

    def warm(self) -> None:
        """Load the model now (the first search would otherwise pay for it)."""
        self._on_model_thread(self._model_components)

    def _on_model_thread(self, work: Callable[[], T]) -> T:
        """Run model work on the service's one model thread: requests queue there instead of competing for the
        same cores, and torch keeps one OpenMP thread team instead of starting one per request thread."""
        return self._model.run(work)

    def _tag(self, v: np.ndarray, z: np.ndarray, labels: list[str], top: int | None) -> list[list[LabelScore]]:
        check_tag_cost(len(labels), len(v))

        def work(v: np.ndarray, z: np.ndarray, labels: list[str]) -> list[list[LabelScore]]:
            with self.metrics.time_stage("tag"):
                return self.index.tag_embeddings(v, z, labels, top=top)

        return self._model.tag_sliced(work, v, z, labels)

    @property
    def model_loaded(self) -> bool:
        return self._components is not None

    def _model_components(self) -> tuple[Any, Any]:
        # Adapter: Index builds these privately; stage timings need them wrapped (see `_Timed`).
        if self._components is None:
            from ..encoder import XClipEncoder
            from ..prompting import PromptScorer

            checkpoint = self.index.checkpoint
            self._components = (XClipEncoder(checkpoint), PromptScorer(checkpoint.model))
        return self._components

    # -- search --------------------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        top_k: int = 10,
        candidates: int | None = None,
        rerank: bool = True,
        per_video: bool = True,
        filters: SearchFilters | None = None,
    ) -> SearchOutcome:
        """Two-stage text search (`SearchEngine`), optionally restricted by `filters`, with stage timings."""
        if not query.strip():
            raise InvalidArgumentError("Empty query", hint="Type what happens in the video, e.g. 'a dog running'.")
        check_search_args(top_k, candidates)
        started = time.perf_counter()
        timings: dict[str, float] = {}
        snap = self.pin()
        check_search_cost(top_k, candidates, rerank, sum(s.count for s in snap.manifest.shards))
        allowed = None
        if filters is not None and filters.active:
            allowed = views.allowed_segment_ids(snap.catalog, snap.generation, filters)

        def work() -> list[SearchHit]:
            encoder, scorer = self._model_components()
            source: Any = snap if allowed is None else _FilteredSnapshot(snap, allowed)
            engine = SearchEngine(
                cast(Snapshot, _Timed(source, _SNAPSHOT_STAGES, self.metrics, timings)),
                cast(Any, _Timed(encoder, {"encode_texts": "text_encode"}, self.metrics, timings)),
                cast(Any, _Timed(scorer, {"score": "rerank"}, self.metrics, timings)),
            )
            return engine.search(query, top_k=top_k, candidates=candidates, rerank=rerank, per_video=per_video)

        hits = self._on_model_thread(work)
        timings["total"] = time.perf_counter() - started
        self.metrics.stage.labels(stage="total").observe(timings["total"])
        return SearchOutcome(snap.generation, hits, timings)

    def similar(
        self,
        segment_id: int,
        *,
        top_k: int = 10,
        candidates: int | None = None,
        per_video: bool = True,
        include_same_video: bool = False,
        filters: SearchFilters | None = None,
    ) -> SearchOutcome:
        """Query by example: segments whose ``v`` is nearest to an indexed segment's (cosine; no text, no rerank).

        Adapter until `Index` has query by example; the score is ``cos(v_example, v)``.
        """
        n_candidates = check_search_args(top_k, candidates)
        started = time.perf_counter()
        snap = self.pin()
        row = snap.catalog.segment_rows([segment_id], snap.generation).get(segment_id)
        if row is None:
            raise NotFoundError(f"No segment with id {segment_id} in this index")
        own_video = int(row["video_id"])
        own_count = len(views.video_segments(snap.catalog, snap.generation, own_video))
        v = views.gather_v(snap, np.array([segment_id], dtype=np.int64))[0]
        unit = v / max(float(np.linalg.norm(v)), 1e-12)
        source: Any = snap
        if filters is not None and filters.active:
            source = _FilteredSnapshot(snap, views.allowed_segment_ids(snap.catalog, snap.generation, filters))
        found: list[Candidate] = source.coarse(unit, n_candidates + own_count)
        kept = [
            (c.coarse_score, c)
            for c in found
            if c.segment_id != segment_id and (include_same_video or int(c.row["video_id"]) != own_video)
        ]
        hits = _assemble_hits(kept, top_k, per_video)
        elapsed = time.perf_counter() - started
        self.metrics.stage.labels(stage="similar").observe(elapsed)
        example = {"segment_id": segment_id, "video_id": own_video, "path": row["path"]}
        return SearchOutcome(snap.generation, hits, {"total": elapsed}, example)

    # -- tagging -------------------------------------------------------------------------------------------

    def tag_video(self, video_id: int, labels: Sequence[str], *, top: int | None = None) -> dict[str, Any]:
        """Every label's probability for each live segment of one video, and their mean over the video."""
        labels = _check_labels(labels)
        snap = self.pin()
        video = views.video_row(snap.catalog, video_id)
        segs = views.video_segments(snap.catalog, snap.generation, video_id)
        if video is None or not segs:
            raise NotFoundError(f"No indexed video with id {video_id} in this index")
        v, z = snap.vectors.gather(np.array([s["id"] for s in segs], dtype=np.int64))
        per_segment = self._tag(v, z, labels, None)
        mean = {label: 0.0 for label in labels}
        for tags in per_segment:
            for t in tags:
                mean[t.label] += t.prob / len(per_segment)
        overall = sorted(mean.items(), key=lambda kv: -kv[1])
        return {
            "generation": snap.generation,
            "video_id": video_id,
            "path": video["path"],
            "labels": [{"label": k, "prob": p} for k, p in overall[:top]],
            "segments": [
                {
                    "segment_id": int(s["id"]),
                    "start": round(float(s["start_s"]), 3),
                    "end": round(float(s["end_s"]), 3),
                    "labels": [t.to_dict() for t in tags[:top]],
                }
                for s, tags in zip(segs, per_segment, strict=True)
            ],
        }

    def tag_index(self, labels: Sequence[str], *, top: int | None, offset: int, limit: int) -> dict[str, Any]:
        """One page of the whole index tagged from stored vectors (the ``tag --index`` shape, plus ids)."""
        labels = _check_labels(labels)
        snap = self.pin()
        total, rows = views.index_segment_page(snap, offset, limit)
        results: list[dict[str, Any]] = []
        if rows:
            v, z = snap.vectors.gather(np.array([r["id"] for r in rows], dtype=np.int64))
            tags = self._tag(v, z, labels, top)
            results = [
                {
                    "segment_id": int(r["id"]),
                    "video_id": int(r["video_id"]),
                    "path": r["path"],
                    "start": round(float(r["start_s"]), 3),
                    "end": round(float(r["end_s"]), 3),
                    "labels": [t.to_dict() for t in tagged],
                }
                for r, tagged in zip(rows, tags, strict=True)
            ]
        return {"generation": snap.generation, "total": total, "offset": offset, "results": results}

    def save_tags(self, labels: Sequence[str], video_id: int | None, *, top: int | None = None) -> int:
        """Store the labels' probabilities (the `top` most probable per segment, else all) in the catalog's tags
        table, for one video or for the whole index, as ``xclip-search tag --index DIR --save`` does; returns the
        number of (segment, label) rows written. Earlier tags of the same labels on those segments are replaced,
        so ``search --tag LABEL`` filters on the newest."""
        labels = _check_labels(labels)
        snap = self.pin()
        if video_id is None:
            check_tag_cost(len(labels), snap.catalog.live_segment_count(snap.generation))

            def whole() -> int:
                return sum(len(s.labels) for s in self.index.tag_index(labels, top=top, save=True))

            return self._model.run_bulk(whole)
        segs = views.video_segments(snap.catalog, snap.generation, video_id)
        if not segs:
            raise NotFoundError(f"No indexed video with id {video_id} in this index")
        ids = [int(s["id"]) for s in segs]
        v, z = snap.vectors.gather(np.array(ids, dtype=np.int64))
        per_segment = self._tag(v, z, labels, top)
        rows = [(sid, t.label, t.prob, t.score) for sid, tags in zip(ids, per_segment, strict=True) for t in tags]
        return snap.catalog.save_tags(labels, ids, rows)

    # -- metadata ------------------------------------------------------------------------------------------

    def video(self, video_id: int) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
        snap = self.pin()
        row = views.video_row(snap.catalog, video_id)
        if row is None:
            raise NotFoundError(f"No video with id {video_id} in this index")
        return row, views.video_segments(snap.catalog, snap.generation, video_id), snap.generation

    def segment(self, segment_id: int) -> tuple[dict[str, Any], int]:
        snap = self.pin()
        row = snap.catalog.segment_rows([segment_id], snap.generation).get(segment_id)
        if row is None:
            raise NotFoundError(f"No segment with id {segment_id} in this index")
        return row, snap.generation

    def videos(
        self, *, status: str | None, name: str | None, offset: int, limit: int
    ) -> tuple[int, list[dict[str, Any]], int]:
        snap = self.pin()
        total, rows = views.list_videos(
            snap.catalog, snap.generation, status=status, name=name, offset=offset, limit=limit
        )
        return total, rows, snap.generation

    def info(self) -> dict[str, Any]:
        with self._lock:
            self.pin()
            return self.index.info()

    def failures(self) -> list[dict[str, Any]]:
        self.pin()
        return self.index.failures()

    def recorded_roots(self) -> list[str]:
        return [str(p) for p in roots_from_runs(views.recorded_roots(self.pin().catalog))]

    def close(self) -> None:
        self._model.shutdown()
        self.index.close()


class _Timed:
    """Delegates to `target`, timing the named methods into the stage histogram and `timings` (seconds)."""

    def __init__(self, target: Any, stages: dict[str, str], metrics: Metrics, timings: dict[str, float]) -> None:
        self._target = target
        self._stages = stages
        self._metrics = metrics
        self._timings = timings

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        stage = self._stages.get(name)
        if stage is None:
            return attr
        if not callable(attr):  # a nested object whose methods are timed, e.g. ``vectors`` -> ``gather``
            sub_name, _, sub_stage = stage.partition(":")
            return _Timed(attr, {sub_name: sub_stage}, self._metrics, self._timings)

        def timed(*args: Any, **kwargs: Any) -> Any:
            ctx: AbstractContextManager[None] = self._metrics.time_stage(stage)
            started = time.perf_counter()
            with ctx:
                result = attr(*args, **kwargs)
            self._timings[stage] = self._timings.get(stage, 0.0) + time.perf_counter() - started
            return result

        return timed


class _FilteredSnapshot:
    """A snapshot whose first stage only sees `allowed` segment ids (an exact scan of their ``v``).

    Adapter until the engine filters inside its own first stage; exact, so recall within the filter is total.
    """

    def __init__(self, snapshot: Snapshot, allowed: np.ndarray) -> None:
        self._snapshot = snapshot
        self._allowed = allowed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._snapshot, name)

    def coarse(self, query: np.ndarray, k: int) -> list[Candidate]:
        if len(self._allowed) == 0:
            return []
        v = views.gather_v(self._snapshot, self._allowed)
        scores = v @ np.asarray(query, np.float32).reshape(-1)
        take = min(k, len(scores))
        top = np.argpartition(-scores, take - 1)[:take] if take < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        ids = self._allowed[top]
        rows = self._snapshot.catalog.segment_rows(ids.tolist(), self._snapshot.generation)
        return [
            Candidate(segment_id=int(i), coarse_score=float(scores[j]), row=rows[int(i)])
            for i, j in zip(ids.tolist(), top.tolist(), strict=True)
            if int(i) in rows
        ]


def _assemble_hits(scored: list[tuple[float, Candidate]], top_k: int, per_video: bool) -> list[SearchHit]:
    hits: list[SearchHit] = []
    seen: set[int] = set()
    for score, cand in sorted(scored, key=lambda p: -p[0]):
        video_id = int(cand.row["video_id"])
        if per_video and video_id in seen:
            continue
        seen.add(video_id)
        hits.append(
            SearchHit(
                rank=len(hits) + 1,
                video_id=video_id,
                path=str(cand.row["path"]),
                start=float(cand.row["start_s"]),
                end=float(cand.row["end_s"]),
                score=float(score),
                coarse_score=float(cand.coarse_score),
                segment_id=cand.segment_id,
            )
        )
        if len(hits) == top_k:
            break
    return hits


def _check_labels(labels: Sequence[str]) -> list[str]:
    cleaned = list(dict.fromkeys(s.strip() for s in labels if s and s.strip()))
    if not cleaned:
        raise InvalidArgumentError("No labels given", hint='Give labels such as "running, cooking, playing guitar".')
    if len(cleaned) > MAX_LABELS:
        raise InvalidArgumentError(f"Too many labels ({len(cleaned)}). At most {MAX_LABELS} are supported.")
    return cleaned


__all__ = [
    "MAX_CANDIDATES",
    "MAX_TOP_K",
    "IndexService",
    "NotFoundError",
    "SearchFilters",
    "SearchOutcome",
    "UnsupportedError",
]
