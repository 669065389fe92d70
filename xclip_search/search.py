"""Text to ranked, time-stamped moments: ANN candidates on ``cos(v, t)``, then X-CLIP's exact prompted score.

No fixed pair of vectors gives X-CLIP's score (the text embedding depends on the video), so the first stage
only proposes C candidates and the second computes ``cos(v, t + PG(t, Z))`` for each of them. The final order
is the exact score's; whenever the true top-K are among the C candidates the result equals an exhaustive
exact ranking (`scripts/bench_query.py` measures how often that holds for each C).

Results are what people expect from a video search: one hit per video by default (its best segment, widened
to the adjacent segments that match about as well, so a moment spanning two windows reads as one range),
every segment on request, an optional score floor, and filters on the catalog (`xclip_search.filters`). A
merged range only widens over segments that pass the same filter, so ``start>=2`` never answers 0-5 s.

Every face (the command line, `xclip_search.Index`, the HTTP server) searches through this engine: the results
carry the generation they read and per-stage timings (`SearchResults`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .encoder import XClipEncoder
from .filters import SearchFilter, coerce_filter, no_saved_tags
from .fusion import fused_search, text_query_for
from .prompting import PromptScorer
from .results import (
    DEFAULT_CANDIDATES,
    DEFAULT_TOP_K,
    MAX_CANDIDATES,
    MAX_TOP_K,
    SearchHit,
    SearchResults,
    check_match,
    check_min_score,
    check_query,
    check_search_args,
)
from .store.layout import SegmentLayout, read_segment_layout
from .store.snapshot import Candidate, Snapshot

# Neighbour merging widens hits in at most this many rounds (one batch of exact scores each; windows double).
_MAX_MERGE_ROUNDS = 16

Where = SearchFilter | str | Iterable[str] | None


class _Clock:
    """Seconds per stage of one search (stages may run several times; their times add up)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


@dataclass
class _Scored:
    score: float
    cand: Candidate

    @property
    def video_id(self) -> int:
        return int(self.cand.row["video_id"])


class SearchEngine:
    """Two-stage search over one snapshot with one model.

    `merge_within`: adjacent segments whose score is within this of a hit's best segment join its range;
    default ``1 / exp(logit_scale)`` (one logit: 0.01 for the released X-CLIP models); 0 disables merging.
    """

    def __init__(
        self, snapshot: Snapshot, encoder: XClipEncoder, scorer: PromptScorer, *, merge_within: float | None = None
    ) -> None:
        self.snapshot = snapshot
        self.encoder = encoder
        self.scorer = scorer
        if merge_within is None:
            merge_within = 1.0 / float(encoder.model.logit_scale.detach().exp().item())
        self.merge_within = float(merge_within)
        # The timings of the latest search (scripts/bench_query.py); concurrent callers read their own results'.
        self.last_timings: dict[str, float] = {}
        self._allowed_cache: OrderedDict[tuple[int, tuple[str, ...]], np.ndarray] = OrderedDict()
        self._layout: SegmentLayout | None = None
        self._layout_lock = threading.Lock()

    @property
    def layout(self) -> SegmentLayout:
        """Where each live segment sits in its video, read once per snapshot: the merge's map in memory. A
        long-lived reader (the server's warm-up, `Index.load_model`) loads it; until then each search reads only
        its hits' videos (`_layout_of`), so a one-shot search never pays for the whole map (~3 s at 1M)."""
        layout = self._layout
        if layout is None:
            with self._layout_lock:
                layout = self._layout
                if layout is None:
                    layout = read_segment_layout(self.snapshot.catalog.engine, self.snapshot.generation)
                    self._layout = layout
        return layout

    def _layout_of(self, video_ids: Sequence[int]) -> SegmentLayout:
        """The whole map when it is loaded, else the layout of `video_ids` alone (one catalog query)."""
        layout = self._layout
        if layout is not None:
            return layout
        return read_segment_layout(self.snapshot.catalog.engine, self.snapshot.generation, video_ids)

    # -- public ------------------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        top_k: int = DEFAULT_TOP_K,
        candidates: int | None = None,
        rerank: bool = True,
        per_video: bool = True,
        where: Where = None,
        min_score: float | None = None,
        merge: bool = True,
        match: str | None = None,
    ) -> SearchResults:
        """Rank moments for `query`; one hit per video (its best range) unless `per_video` is False.

        `match`: ``visual`` (X-CLIP alone), ``speech`` (the videos' cues alone), ``both`` (fused, see
        `xclip_search.fusion`); None: ``both`` when the index holds any cue, else ``visual``.
        """
        check_search_args(top_k, candidates)
        check_min_score(min_score)
        check_query(query)
        check_match(match)
        clock = _Clock()
        started = time.perf_counter()
        with clock.stage("text_search"):
            words = text_query_for(match, query, self.snapshot.catalog)
        with clock.stage("text_encode"):
            t = self.encoder.encode_texts([query])[0]
        if words is None:
            if match == "speech":
                return self._results([], clock, started, 0)
            return self._search_embedding(
                t, top_k, candidates, rerank, per_video, where, min_score, merge, clock=clock, started=started
            )
        both = match != "speech"
        visual = (
            self._search_embedding(t, top_k, candidates, rerank, per_video, where, min_score, merge, clock, started)
            if both
            else SearchResults()
        )
        return fused_search(self, t, words, visual, top_k, rerank, per_video, where, clock, started)

    def search_embedding(
        self,
        t: np.ndarray,
        *,
        top_k: int = DEFAULT_TOP_K,
        candidates: int | None = None,
        rerank: bool = True,
        per_video: bool = True,
        where: Where = None,
        min_score: float | None = None,
        merge: bool = True,
    ) -> SearchResults:
        """`search` for an already encoded text ``t`` (the raw projected embedding, as the prompts read it)."""
        check_min_score(min_score)
        return self._search_embedding(
            t, top_k, candidates, rerank, per_video, where, min_score, merge, _Clock(), time.perf_counter()
        )

    def _search_embedding(
        self,
        t: np.ndarray,
        top_k: int,
        candidates: int | None,
        rerank: bool,
        per_video: bool,
        where: Where,
        min_score: float | None,
        merge: bool,
        clock: _Clock,
        started: float,
    ) -> SearchResults:
        n_candidates = check_search_args(top_k, candidates)
        t = np.asarray(t, np.float32).reshape(-1)
        unit = t / np.linalg.norm(t)
        with clock.stage("first_stage"):
            allowed = self._allowed(where)
            found = self._candidates(unit, n_candidates, allowed, top_k if per_video else 0)
            if per_video and merge and self.merge_within > 0:
                self._prefetch_neighbours(found, top_k)
        if rerank:

            def score_ids(ids: np.ndarray) -> np.ndarray:
                with clock.stage("gather"):
                    # Z as stored: the scorer widens float16 (torch does it ~20x faster than numpy).
                    v, z = self.snapshot.vectors.gather(ids, widen=False)
                with clock.stage("rerank"):
                    return self.scorer.score(v, z, t[None, :])[:, 0]

        else:

            def score_ids(ids: np.ndarray) -> np.ndarray:
                with clock.stage("gather"):
                    v = self.snapshot.vectors.gather_v(ids)
                return v @ unit

        if rerank and found:
            exact = score_ids(np.array([c.segment_id for c in found], dtype=np.int64))
            scored = [_Scored(float(s), c) for s, c in zip(exact.tolist(), found, strict=True)]
        else:
            scored = [_Scored(c.coarse_score, c) for c in found]
        hits = self._hits(scored, top_k, per_video, min_score, score_ids if merge else None, allowed, clock)
        return self._results(hits, clock, started, len(found))

    def similar(
        self,
        v: np.ndarray,
        *,
        top_k: int = DEFAULT_TOP_K,
        candidates: int | None = None,
        per_video: bool = True,
        where: Where = None,
        min_score: float | None = None,
        exclude_videos: Sequence[int] = (),
        merge: bool = True,
    ) -> SearchResults:
        """Query by example: rank segments by ``cos(v_example, v)``, the video embeddings' own similarity."""
        n_candidates = check_search_args(top_k, candidates)
        check_min_score(min_score)
        clock = _Clock()
        started = time.perf_counter()
        q = np.asarray(v, np.float32).reshape(-1)
        q = q / np.linalg.norm(q)
        excluded = {int(x) for x in exclude_videos}
        with clock.stage("first_stage"):
            extra = self._layout_of(sorted(excluded)).count(sorted(excluded)) if excluded else 0
            allowed = self._allowed(where)
            found = self._candidates(q, n_candidates + extra, allowed, top_k + len(excluded) if per_video else 0)
        scored = [_Scored(c.coarse_score, c) for c in found if int(c.row["video_id"]) not in excluded]

        def score_ids(ids: np.ndarray) -> np.ndarray:
            with clock.stage("gather"):
                return self.snapshot.vectors.gather_v(ids) @ q

        hits = self._hits(
            scored[:n_candidates], top_k, per_video, min_score, score_ids if merge else None, allowed, clock
        )
        return self._results(hits, clock, started, len(found))

    def _results(self, hits: list[SearchHit], clock: _Clock, started: float, candidates: int) -> SearchResults:
        clock.seconds["total"] = time.perf_counter() - started
        self.last_timings = {**clock.seconds, "candidates": float(candidates)}
        return SearchResults(hits, generation=self.snapshot.generation, timings=clock.seconds, candidates=candidates)

    def _candidates(self, q: np.ndarray, count: int, allowed: np.ndarray | None, videos_wanted: int) -> list[Candidate]:
        """The first stage; when one hit per video is wanted and a full pool holds fewer distinct videos than
        that (a few long videos matching everywhere), the pool doubles, at most three times (the rerank then
        scores the larger pool: exact per-video results cost more only when they need it)."""
        if allowed is not None and len(allowed) == 0:
            return []
        for attempt in range(4):
            found = self.snapshot.coarse(q, count, allowed=allowed)
            full = len(found) == count
            distinct = len({int(c.row["video_id"]) for c in found})
            if attempt == 3 or not full or distinct >= videos_wanted or count >= MAX_CANDIDATES:
                return found
            count = min(MAX_CANDIDATES, count * 2)
        raise AssertionError("unreachable")

    def _prefetch_neighbours(self, found: list[Candidate], top_k: int) -> None:
        """Queue the Z of the segments next to the likely hits, so the merge's reads overlap the rerank.

        The videos of the first `top_k` distinct candidates are usually the final hits; their segments'
        neighbours (two each side) are what the merge's first round scores.
        """
        best: dict[int, int] = {}
        for c in found:
            video = int(c.row["video_id"])
            if video not in best:
                best[video] = c.segment_id
                if len(best) == top_k:
                    break
        layout = self._layout_of(list(best))
        near: list[int] = []
        for video, pos in zip(best, layout.positions(list(best.values())).tolist(), strict=True):
            if pos < 0:
                continue
            lo, hi = layout.span(video)
            seq = int(layout.seq[pos])
            near.extend(
                int(layout.ids[p])
                for p in range(max(lo, pos - 2), min(hi, pos + 3))
                if 0 < abs(int(layout.seq[p]) - seq) <= 2
            )
        self.snapshot.vectors.prefetch_z(np.array(near, dtype=np.int64))

    # -- filters -----------------------------------------------------------------------------------------

    def _allowed(self, where: Where) -> np.ndarray | None:
        """Ids of the live segments a filter keeps (cached per generation and filter), or None for no filter."""
        flt = coerce_filter(where)
        if not flt:
            return None
        if flt.uses_tags and not self.snapshot.catalog.has_tags():
            raise no_saved_tags()
        if flt.uses_tags:
            # Saved tags change without a new generation, so a tag filter is evaluated every time.
            return self.snapshot.catalog.segment_ids_where(self.snapshot.generation, flt.clause())
        key = (self.snapshot.generation, tuple(flt.describe()))
        cached = self._allowed_cache.get(key)
        if cached is None:
            cached = self.snapshot.catalog.segment_ids_where(self.snapshot.generation, flt.clause())
            self._allowed_cache[key] = cached
            while len(self._allowed_cache) > 16:
                self._allowed_cache.popitem(last=False)
        else:
            self._allowed_cache.move_to_end(key)
        return cached

    # -- results -----------------------------------------------------------------------------------------

    def _hits(
        self,
        scored: list[_Scored],
        top_k: int,
        per_video: bool,
        min_score: float | None,
        score_ids: Callable[[np.ndarray], np.ndarray] | None,
        allowed: np.ndarray | None,
        clock: _Clock,
    ) -> list[SearchHit]:
        scored.sort(key=lambda s: (-s.score, -s.cand.coarse_score, s.cand.segment_id))
        if min_score is not None:
            scored = [s for s in scored if s.score >= min_score]
        if not per_video:
            return [
                _hit(i + 1, s, s.cand.row["start_s"], s.cand.row["end_s"], (s.cand.segment_id,))
                for i, s in enumerate(scored[:top_k])
            ]
        best: list[_Scored] = []
        seen: set[int] = set()
        for s in scored:
            if s.video_id not in seen:
                seen.add(s.video_id)
                best.append(s)
                if len(best) == top_k:
                    break
        if score_ids is None or self.merge_within <= 0:
            return [
                _hit(i + 1, s, s.cand.row["start_s"], s.cand.row["end_s"], (s.cand.segment_id,))
                for i, s in enumerate(best)
            ]
        known = {s.cand.segment_id: s.score for s in scored}
        with clock.stage("merge"):
            before = clock.seconds.get("gather", 0.0) + clock.seconds.get("rerank", 0.0)
            hits = self._merge(best, known, min_score, score_ids, allowed)
            # The merge's own time: its reads of v/Z and its exact scores are counted as gather and rerank.
            nested = clock.seconds.get("gather", 0.0) + clock.seconds.get("rerank", 0.0) - before
        clock.seconds["merge"] -= nested
        return hits

    def _merge(
        self,
        best: list[_Scored],
        known: dict[int, float],
        min_score: float | None,
        score_ids: Callable[[np.ndarray], np.ndarray],
        allowed: np.ndarray | None,
    ) -> list[SearchHit]:
        """Widen each hit over the adjacent segments of its video whose score is within `merge_within` and that
        pass the search's filter (`allowed`: sorted ids; None when unfiltered). Adjacency and times come from the
        snapshot's `SegmentLayout` (memory), so the only reads per round are the new segments' vectors."""
        layout = self._layout_of([s.video_id for s in best])
        ids, seqs, starts, ends, shots = layout.ids, layout.seq, layout.start_s, layout.end_s, layout.shot
        bounds = [layout.span(s.video_id) for s in best]  # each hit's video: positions [lo, hi) in the layout
        spans: list[list[int]] = []  # [lo, hi] positions of each hit's range
        found = layout.positions([s.cand.segment_id for s in best]).tolist()
        for pos, (v_lo, v_hi) in zip(found, bounds, strict=True):
            spans.append([pos, pos] if v_lo <= pos < v_hi else [-1, -1])

        def floor(s: _Scored) -> float:
            limit = s.score - self.merge_within
            return max(limit, min_score) if min_score is not None else limit

        def adjacent(a: int, b: int) -> bool:
            """Consecutive windows of one video that touch (no gap between them) and lie in the same shot: a hit
            never widens across a cut (segments without a recorded shot, -1, widen as before)."""
            if shots[a] >= 0 and shots[b] >= 0 and shots[a] != shots[b]:
                return False
            return int(seqs[b]) == int(seqs[a]) + 1 and float(starts[b]) - float(ends[a]) <= 1e-3

        # Each round looks `width` segments further on every side still growing, and width doubles, so a run
        # of r matching segments costs about log2(r) batches of exact scores.
        growing = [[lo >= 0, lo >= 0] for lo, _ in spans]
        width = 2
        for _ in range(_MAX_MERGE_ROUNDS):
            wanted: list[tuple[int, int, list[int]]] = []  # (hit, side 0 = left / 1 = right, positions outward)
            for h in range(len(best)):
                v_lo, v_hi = bounds[h]
                for side, step in ((0, -1), (1, 1)):
                    if not growing[h][side]:
                        continue
                    positions: list[int] = []
                    p = spans[h][side]
                    while len(positions) < width and v_lo <= p + step < v_hi:
                        a_pos, b_pos = (p + step, p) if step < 0 else (p, p + step)
                        if not adjacent(a_pos, b_pos) or not _kept(allowed, int(ids[p + step])):
                            break
                        p += step
                        positions.append(p)
                    if positions:
                        wanted.append((h, side, positions))
                    else:
                        growing[h][side] = False
            if not wanted:
                break
            asked = {int(ids[p]) for _, _, ps in wanted for p in ps}
            unknown = sorted(asked - known.keys())
            if unknown:
                for sid, sc in zip(unknown, score_ids(np.array(unknown, dtype=np.int64)).tolist(), strict=True):
                    known[sid] = float(sc)
            for h, side, positions in wanted:
                for p in positions:
                    if known[int(ids[p])] < floor(best[h]):
                        growing[h][side] = False
                        break
                    spans[h][side] = p
            width *= 2
        hits = []
        for i, (s, (lo, hi)) in enumerate(zip(best, spans, strict=True)):
            if lo < 0:
                hits.append(_hit(i + 1, s, s.cand.row["start_s"], s.cand.row["end_s"], (s.cand.segment_id,)))
                continue
            run = tuple(int(x) for x in ids[lo : hi + 1])
            hits.append(_hit(i + 1, s, float(starts[lo]), float(ends[hi]), run))
        return hits


def _kept(allowed: np.ndarray | None, segment_id: int) -> bool:
    """Whether a segment passes the search's filter (`allowed` holds the sorted ids that do)."""
    if allowed is None:
        return True
    i = int(np.searchsorted(allowed, segment_id))
    return i < len(allowed) and int(allowed[i]) == segment_id


def _hit(rank: int, s: _Scored, start: float, end: float, ids: tuple[int, ...]) -> SearchHit:
    row = s.cand.row
    return SearchHit(
        rank=rank,
        video_id=int(row["video_id"]),
        path=str(row["path"]),
        start=float(start),
        end=float(end),
        score=float(s.score),
        coarse_score=float(s.cand.coarse_score),
        segment_id=s.cand.segment_id,
        best_start=float(row["start_s"]),
        best_end=float(row["end_s"]),
        segment_ids=ids,
    )


__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_TOP_K",
    "MAX_CANDIDATES",
    "MAX_TOP_K",
    "SearchEngine",
    "SearchHit",
    "SearchResults",
    "check_search_args",
]
