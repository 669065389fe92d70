"""Text to ranked, time-stamped moments: ANN candidates on ``cos(v, t)``, then X-CLIP's exact prompted score.

No fixed pair of vectors gives X-CLIP's score (the text embedding depends on the video), so the first stage
only proposes C candidates and the second computes ``cos(v, t + PG(t, Z))`` for each of them. The final order
is the exact score's; whenever the true top-K are among the C candidates the result equals an exhaustive
exact ranking (`scripts/bench_query.py` measures how often that holds for each C).

Results are what people expect from a video search: one hit per video by default (its best segment, widened
to the adjacent segments that match about as well, so a moment spanning two windows reads as one range),
every segment on request, an optional score floor, and filters on the catalog (`xclip_search.filters`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .encoder import XClipEncoder
from .errors import InvalidArgumentError
from .filters import SearchFilter, coerce_filter
from .prompting import PromptScorer
from .store.snapshot import Candidate, Snapshot

DEFAULT_TOP_K = 10
# From scripts/bench_query.py (README, "Search at scale"): recall@10 against exhaustive exact scoring was 0.975 /
# 0.93 at C=25, 1.000 / 0.995 at C=50 and 1.000 from C=100 on the 100k / 1M synthetic indexes; 100 keeps a 2x
# margin over the smallest C that reached 0.98 on both, at half the rerank cost of 200.
DEFAULT_CANDIDATES = 100
MAX_TOP_K = 10_000
MAX_CANDIDATES = 100_000
# Neighbour merging widens hits in at most this many rounds (one batch of exact scores each; windows double).
_MAX_MERGE_ROUNDS = 16

Where = SearchFilter | str | Iterable[str] | None


@dataclass(frozen=True)
class SearchHit:
    """One result: a moment of a video, with its exact score and its first-stage cosine.

    ``start``/``end`` span the merged range; ``best_start``/``best_end`` the best segment inside it.
    """

    rank: int
    video_id: int
    path: str
    start: float
    end: float
    score: float
    coarse_score: float
    segment_id: int
    best_start: float = 0.0
    best_end: float = 0.0
    segment_ids: tuple[int, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of DESIGN.md §4 (contract)."""
        return {
            "rank": self.rank,
            "video_id": self.video_id,
            "path": self.path,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "score": self.score,
            "coarse_score": self.coarse_score,
        }


def check_search_args(top_k: int, candidates: int | None) -> int:
    """Validate k and C; returns the candidate count to use."""
    if not 1 <= top_k <= MAX_TOP_K:
        raise InvalidArgumentError(f"Invalid top-k ({top_k}). It must be between 1 and {MAX_TOP_K}.")
    if candidates is None:
        return max(DEFAULT_CANDIDATES, top_k)
    if not top_k <= candidates <= MAX_CANDIDATES:
        raise InvalidArgumentError(
            f"Invalid candidates ({candidates}). It must be between top-k ({top_k}) and {MAX_CANDIDATES}."
        )
    return candidates


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
        self.last_timings: dict[str, float] = {}
        self._allowed_cache: OrderedDict[tuple[int, tuple[str, ...]], np.ndarray] = OrderedDict()

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
    ) -> list[SearchHit]:
        """Rank moments for `query`; one hit per video (its best range) unless `per_video` is False."""
        check_search_args(top_k, candidates)
        start = time.perf_counter()
        t = self.encoder.encode_texts([query])[0]
        encoded = time.perf_counter() - start
        hits = self.search_embedding(
            t,
            top_k=top_k,
            candidates=candidates,
            rerank=rerank,
            per_video=per_video,
            where=where,
            min_score=min_score,
            merge=merge,
        )
        self.last_timings["encode_s"] = encoded
        self.last_timings["total_s"] = time.perf_counter() - start
        return hits

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
    ) -> list[SearchHit]:
        """`search` for an already encoded text ``t`` (the raw projected embedding, as the prompts read it)."""
        n_candidates = check_search_args(top_k, candidates)
        t = np.asarray(t, np.float32).reshape(-1)
        unit = t / np.linalg.norm(t)
        start = time.perf_counter()
        allowed = self._allowed(where)
        found = self._candidates(unit, n_candidates, allowed, top_k if per_video else 0)
        hint = self._prefetch_neighbours(found, top_k) if per_video and merge and self.merge_within > 0 else {}
        coarse_done = time.perf_counter()
        if rerank:

            def score_ids(ids: np.ndarray) -> np.ndarray:
                v, z = self.snapshot.vectors.gather(ids)
                return self.scorer.score(v, z, t[None, :])[:, 0]

        else:

            def score_ids(ids: np.ndarray) -> np.ndarray:
                return self.snapshot.vectors.gather_v(ids) @ unit

        if rerank and found:
            exact = score_ids(np.array([c.segment_id for c in found], dtype=np.int64))
            scored = [_Scored(float(s), c) for s, c in zip(exact.tolist(), found, strict=True)]
        else:
            scored = [_Scored(c.coarse_score, c) for c in found]
        reranked = time.perf_counter()
        hits = self._hits(scored, top_k, per_video, min_score, score_ids if merge else None, hint)
        self.last_timings = {
            "first_stage_s": coarse_done - start,
            "rerank_s": reranked - coarse_done,
            "merge_s": time.perf_counter() - reranked,
            "candidates": float(len(found)),
        }
        return hits

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
    ) -> list[SearchHit]:
        """Query by example: rank segments by ``cos(v_example, v)``, the video embeddings' own similarity."""
        n_candidates = check_search_args(top_k, candidates)
        q = np.asarray(v, np.float32).reshape(-1)
        q = q / np.linalg.norm(q)
        excluded = {int(x) for x in exclude_videos}
        extra = sum(
            len(s) for s in self.snapshot.catalog.video_segments(sorted(excluded), self.snapshot.generation).values()
        )
        allowed = self._allowed(where)
        found = self._candidates(q, n_candidates + extra, allowed, top_k + len(excluded) if per_video else 0)
        scored = [_Scored(c.coarse_score, c) for c in found if int(c.row["video_id"]) not in excluded]

        def score_ids(ids: np.ndarray) -> np.ndarray:
            return self.snapshot.vectors.gather_v(ids) @ q

        return self._hits(scored[:n_candidates], top_k, per_video, min_score, score_ids if merge else None)

    def _candidates(self, q: np.ndarray, count: int, allowed: np.ndarray | None, videos_wanted: int) -> list[Candidate]:
        """The first stage; when one hit per video is wanted and a full pool holds fewer distinct videos than
        that (a few long videos matching everywhere), the pool doubles, at most three times (the rerank then
        scores the larger pool: exact per-video results cost more only when they need it)."""
        if allowed is not None and len(allowed) == 0:
            return []
        for attempt in range(4):
            # Without a filter, the plain call: wrappers of a snapshot (the server's timing proxy) keep working.
            found = (
                self.snapshot.coarse(q, count) if allowed is None else self.snapshot.coarse(q, count, allowed=allowed)
            )
            full = len(found) == count
            distinct = len({int(c.row["video_id"]) for c in found})
            if attempt == 3 or not full or distinct >= videos_wanted or count >= MAX_CANDIDATES:
                return found
            count = min(MAX_CANDIDATES, count * 2)
        raise AssertionError("unreachable")

    def _prefetch_neighbours(self, found: list[Candidate], top_k: int) -> dict[int, list[dict[str, Any]]]:
        """Queue the Z of the segments next to the likely hits, so the merge's reads overlap the rerank.

        The videos of the first `top_k` distinct candidates are usually the final hits; their segments'
        neighbours (two each side) are what the merge's first round scores.
        """
        best: dict[int, int] = {}
        for c in found:
            video = int(c.row["video_id"])
            if video not in best:
                best[video] = int(c.row["seq"])
                if len(best) == top_k:
                    break
        rows = self.snapshot.catalog.video_segments(list(best), self.snapshot.generation)
        near = [
            int(r["id"])
            for video, seq in best.items()
            for r in rows.get(video, [])
            if 0 < abs(int(r["seq"]) - seq) <= 2
        ]
        self.snapshot.vectors.prefetch_z(np.array(near, dtype=np.int64))
        return rows

    # -- filters -----------------------------------------------------------------------------------------

    def _allowed(self, where: Where) -> np.ndarray | None:
        """Ids of the live segments a filter keeps (cached per generation and filter), or None for no filter."""
        flt = coerce_filter(where)
        if not flt:
            return None
        if flt.uses_tags and not self.snapshot.catalog.has_tags():
            raise InvalidArgumentError(
                "This index has no saved tags to filter on",
                hint="Save some first: xclip-search tag --index DIR --labels 'a,b' --save",
            )
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
        segments_hint: dict[int, list[dict[str, Any]]] | None = None,
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
        return self._merge(best, known, min_score, score_ids, segments_hint or {})

    def _merge(
        self,
        best: list[_Scored],
        known: dict[int, float],
        min_score: float | None,
        score_ids: Callable[[np.ndarray], np.ndarray],
        known_rows: dict[int, list[dict[str, Any]]],
    ) -> list[SearchHit]:
        """Widen each hit over the adjacent segments of its video whose score is within `merge_within`."""
        hit_videos = [s.video_id for s in best]
        missing = [v for v in hit_videos if v not in known_rows]
        per_video = {v: known_rows[v] for v in hit_videos if v in known_rows}
        per_video.update(self.snapshot.catalog.video_segments(missing, self.snapshot.generation))
        spans: list[list[int]] = []  # [lo, hi] positions in the video's segment list
        for s in best:
            segs = per_video.get(s.video_id, [])
            pos = next((i for i, r in enumerate(segs) if int(r["id"]) == s.cand.segment_id), None)
            spans.append([pos, pos] if pos is not None else [-1, -1])

        def floor(s: _Scored) -> float:
            limit = s.score - self.merge_within
            return max(limit, min_score) if min_score is not None else limit

        # Each round looks `width` segments further on every side still growing, and width doubles, so a run
        # of r matching segments costs about log2(r) batches of exact scores.
        growing = [[lo >= 0, lo >= 0] for lo, _ in spans]
        width = 2
        for _ in range(_MAX_MERGE_ROUNDS):
            wanted: list[tuple[int, int, list[int]]] = []  # (hit, side 0 = left / 1 = right, positions outward)
            for h, s in enumerate(best):
                segs = per_video.get(s.video_id, [])
                for side, step in ((0, -1), (1, 1)):
                    if not growing[h][side]:
                        continue
                    positions: list[int] = []
                    p = spans[h][side]
                    while len(positions) < width and 0 <= p + step < len(segs):
                        a_seg, b_seg = (segs[p + step], segs[p]) if step < 0 else (segs[p], segs[p + step])
                        if not _adjacent(a_seg, b_seg):
                            break
                        p += step
                        positions.append(p)
                    if positions:
                        wanted.append((h, side, positions))
                    else:
                        growing[h][side] = False
            if not wanted:
                break
            asked = {int(per_video[best[h].video_id][p]["id"]) for h, _, ps in wanted for p in ps}
            unknown = sorted(asked - known.keys())
            if unknown:
                for sid, sc in zip(unknown, score_ids(np.array(unknown, dtype=np.int64)).tolist(), strict=True):
                    known[sid] = float(sc)
            for h, side, positions in wanted:
                segs = per_video[best[h].video_id]
                for p in positions:
                    if known[int(segs[p]["id"])] < floor(best[h]):
                        growing[h][side] = False
                        break
                    spans[h][side] = p
            width *= 2
        hits = []
        for i, (s, (lo, hi)) in enumerate(zip(best, spans, strict=True)):
            if lo < 0:
                hits.append(_hit(i + 1, s, s.cand.row["start_s"], s.cand.row["end_s"], (s.cand.segment_id,)))
                continue
            segs = per_video[s.video_id][lo : hi + 1]
            hits.append(_hit(i + 1, s, segs[0]["start_s"], segs[-1]["end_s"], tuple(int(r["id"]) for r in segs)))
        return hits


def _adjacent(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Consecutive windows of one video that touch (no gap between them) and lie in the same shot: a hit never
    widens across a cut (segments planned without shots, with no shot recorded, widen as before)."""
    shot_a, shot_b = a.get("shot"), b.get("shot")
    if shot_a is not None and shot_b is not None and shot_a != shot_b:
        return False
    return int(b["seq"]) == int(a["seq"]) + 1 and float(b["start_s"]) - float(a["end_s"]) <= 1e-3


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
