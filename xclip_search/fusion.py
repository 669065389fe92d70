"""Fusing what is shown with what is said: X-CLIP's moments and full-text matches of a video's cues, one list.

A cue that matches the query (`store.fulltext`: every word, ``"phrases"``, ``prefix*``, ``OR``) becomes a
*spoken moment*: the run of the video's segments whose time span overlaps the cue, so the moment's span
contains the cue wherever segments cover it. A spoken moment and an X-CLIP hit that share a segment are one
moment, found by ``both``; its span is the union of the two.

The two lists are fused by **reciprocal rank fusion** (RRF): a moment scores ``1 / (k + rank)`` in each list
that has it, summed. It was chosen by measurement (`scripts/bench_fusion.py`; figures in the README, "Subtitles:
search by what is said") against a calibrated mix of scores (min-max normalised X-CLIP and BM25 scores, weighted)
on a generated library scored by the demo model, over three seeds: RRF left shown-only queries exactly as X-CLIP
ranks them, found every said-only moment, and ranked moments both shown and said first (MRR 0.93-1.00, against
0.67-0.87 for the text alone and 0.49-0.69 for X-CLIP alone), as well as the best mix; the mix needs a weight,
and the wrong one (0.7 on X-CLIP) lost the said moments (MRR 0.21-0.24). BM25 (SQLite) and ``ts_rank``
(PostgreSQL) are on different scales and X-CLIP's cosine has a narrow, model-dependent range; a rank fusion
reads neither. Ties (a video's X-CLIP moment and its said moment, each first in its list) go to the words.

Nothing here changes X-CLIP's score: a hit keeps it in ``score`` (for a moment found only by its words, the
exact score of its best segment), and the fused value goes in ``fused_score``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np

from .results import Match, SearchHit, SearchResults
from .store.catalog import Catalog
from .store.cues import Cue, CueMatch
from .store.fulltext import TextQuery, parse_query
from .store.layout import SegmentLayout

if TYPE_CHECKING:
    from .search import SearchEngine, Where, _Clock

#: RRF's constant: 60 is the value of Cormack et al. (2009) and of most search engines; the measurement kept it.
RRF_K = 60.0


@dataclass(frozen=True)
class FusionMethod:
    """How two ranked lists become one: ``rrf`` (reciprocal rank fusion with constant `k`) or ``mix`` (a weighted
    sum of min-max normalised scores, `visual_weight` on X-CLIP's; kept to measure RRF against)."""

    kind: Literal["rrf", "mix"] = "rrf"
    k: float = RRF_K
    visual_weight: float = 0.5
    #: RRF only: the weight of the text list's term (X-CLIP's has weight 1)
    text_weight: float = 1.0


DEFAULT_FUSION = FusionMethod()


@dataclass(frozen=True)
class SpokenMoment:
    """A cue that matched, placed on the video's segments: the run it overlaps (`segment_ids`, in time order,
    only those the search's filter keeps) and that run's span."""

    video_id: int
    segment_ids: tuple[int, ...]
    start: float
    end: float
    cue: Cue
    text_score: float
    middle: int = 0  # the position in `segment_ids` of the segment holding the cue's middle


@dataclass(frozen=True)
class Fused:
    """One moment of the fused list: its X-CLIP hit, its spoken moment, or both, and the fused score."""

    visual: SearchHit | None
    spoken: SpokenMoment | None
    fused_score: float

    @property
    def match(self) -> Match:
        if self.visual is not None and self.spoken is not None:
            return "both"
        return "visual" if self.visual is not None else "speech"

    @property
    def video_id(self) -> int:
        if self.visual is not None:
            return self.visual.video_id
        assert self.spoken is not None
        return self.spoken.video_id


def spoken_moments(
    matches: Sequence[CueMatch], layout: SegmentLayout, allowed: np.ndarray | None, *, per_video: bool
) -> list[SpokenMoment]:
    """The matched cues (best first) as moments on the segments of `layout`; a cue no kept segment overlaps is
    left out. With `per_video`, a video's best cue only; otherwise one moment per run of segments (the best
    cue on it)."""
    out: list[SpokenMoment] = []
    seen: set[int] | set[tuple[int, ...]] = set()
    for m in matches:
        video_id = m.stored.video_id
        if per_video and video_id in seen:
            continue
        run = _overlapping(layout, video_id, m.stored.cue, allowed)
        if not run:
            continue
        key: int | tuple[int, ...] = video_id if per_video else tuple(int(layout.ids[p]) for p in run)
        if key in seen:
            continue
        seen.add(key)  # type: ignore[arg-type]
        mid = (m.stored.cue.start + m.stored.cue.end) / 2
        middle = next((i for i, p in enumerate(run) if float(layout.end_s[p]) > mid), len(run) - 1)
        out.append(
            SpokenMoment(
                video_id=video_id,
                segment_ids=tuple(int(layout.ids[p]) for p in run),
                start=float(layout.start_s[run[0]]),
                end=float(layout.end_s[run[-1]]),
                cue=m.stored.cue,
                text_score=m.score,
                middle=middle,
            )
        )
    return out


def _overlapping(layout: SegmentLayout, video_id: int, cue: Cue, allowed: np.ndarray | None) -> list[int]:
    """Positions of the video's segments whose span overlaps the cue's (an instant cue: the segment holding
    it), kept by the filter."""
    lo, hi = layout.span(video_id)
    if lo == hi:
        return []
    starts, ends = layout.start_s[lo:hi], layout.end_s[lo:hi]
    # An instant cue (start == end) lies in the segment holding it.
    hit = (starts < max(cue.end, cue.start + 1e-9)) & (ends > cue.start)
    positions = [lo + int(i) for i in np.flatnonzero(hit)]
    if allowed is not None:
        positions = [p for p in positions if _kept(allowed, int(layout.ids[p]))]
    return positions


def _kept(allowed: np.ndarray, segment_id: int) -> bool:
    i = int(np.searchsorted(allowed, segment_id))
    return i < len(allowed) and int(allowed[i]) == segment_id


def fuse(
    visual: Sequence[SearchHit],
    spoken: Sequence[SpokenMoment],
    *,
    per_video: bool,
    method: FusionMethod = DEFAULT_FUSION,
) -> list[Fused]:
    """One ranked list from X-CLIP's hits (in their order) and the spoken moments (in text-relevance order).

    A spoken moment joins the best X-CLIP hit of its video that shares a segment with it (one moment, found by
    both). With `per_video`, a video keeps its best fused moment only.
    """
    paired: dict[int, int] = {}  # visual index -> spoken index
    taken: set[int] = set()
    for s_i, s in enumerate(spoken):
        segs = set(s.segment_ids)
        for v_i, v in enumerate(visual):
            if v_i in paired or v.video_id != s.video_id:
                continue
            if segs.intersection(v.segment_ids or (v.segment_id,)):
                paired[v_i] = s_i
                taken.add(s_i)
                break
    v_norm = _normalised([h.score for h in visual])
    s_norm = _normalised([s.text_score for s in spoken])

    def value(v_i: int | None, s_i: int | None) -> float:
        if method.kind == "rrf":
            v_term = 1.0 / (method.k + v_i + 1) if v_i is not None else 0.0
            return v_term + (method.text_weight / (method.k + s_i + 1) if s_i is not None else 0.0)
        w = method.visual_weight
        return (w * v_norm[v_i] if v_i is not None else 0.0) + ((1 - w) * s_norm[s_i] if s_i is not None else 0.0)

    items: list[tuple[float, int, int, Fused]] = []
    big = len(visual) + len(spoken) + 1
    for v_i, v in enumerate(visual):
        pair = paired.get(v_i)
        f = Fused(v, spoken[pair] if pair is not None else None, value(v_i, pair))
        items.append((f.fused_score, v_i, pair if pair is not None else big, f))
    for s_i, s in enumerate(spoken):
        if s_i not in taken:
            items.append((value(None, s_i), big, s_i, Fused(None, s, value(None, s_i))))
    # Ties (a video's X-CLIP moment and its said moment, each first in its list) go to the words: a literal match
    # is firmer evidence than the best of X-CLIP's scores, which every video has.
    items.sort(key=lambda x: (-x[0], min(x[1], x[2]), x[2], x[1]))
    ranked = [f for *_, f in items]
    if per_video:
        kept: list[Fused] = []
        videos: set[int] = set()
        for f in ranked:
            if f.video_id not in videos:
                videos.add(f.video_id)
                kept.append(f)
        ranked = kept
    return ranked


# -- the engine's fused search -----------------------------------------------------------------------------


def text_query_for(match: str | None, query: str, catalog: Catalog) -> TextQuery | None:
    """The full-text query a search runs besides X-CLIP's, or None when it runs X-CLIP alone: ``match`` visual,
    or unset on an index without any cue (the default then stays what it was before text tracks)."""
    if match == "visual" or (match is None and not catalog.has_cues()):
        return None
    return parse_query(query)


def fused_search(
    engine: SearchEngine,
    t: np.ndarray,
    words: TextQuery,
    visual: SearchResults,
    top_k: int,
    rerank: bool,
    per_video: bool,
    where: Where,
    clock: _Clock,
    started: float,
    method: FusionMethod = DEFAULT_FUSION,
) -> SearchResults:
    """`SearchEngine.search` with text: X-CLIP's `visual` hits (empty for ``match speech``) fused with the
    moments whose cues match `words`, under the same filter. Moments found only by their words get X-CLIP's
    score of their best segment (exact when `rerank`), so ``score`` means the same on every hit."""
    snapshot = engine.snapshot
    catalog = snapshot.catalog
    allowed = engine._allowed(where)
    # Several cues of one video may match, and a filter drops some after the fact: read deeper than k.
    limit = max(50, 5 * top_k) * (4 if allowed is not None else 1)
    with clock.stage("text_search"):
        matches = catalog.search_cues(words, limit=limit)
        spoken = (
            spoken_moments(
                matches, engine._layout_of(sorted({m.stored.video_id for m in matches})), allowed, per_video=per_video
            )
            if matches
            else []
        )
    with clock.stage("fuse"):
        fused = fuse(list(visual), spoken, per_video=per_video, method=method)[:top_k]
    only = [f.spoken for f in fused if f.visual is None and f.spoken is not None]
    # One segment stands for a moment found by its words: the one holding the cue's middle (X-CLIP's score of it
    # is the hit's score; one exact score per such hit keeps the fused search within a few ms of X-CLIP alone).
    best = {id(s): s.segment_ids[s.middle] for s in only}
    ids = np.array(sorted(set(best.values())), dtype=np.int64)
    exact: dict[int, float] = {}
    coarse: dict[int, float] = {}
    if len(ids):
        t = np.asarray(t, np.float32).reshape(-1)
        unit = t / np.linalg.norm(t)
        with clock.stage("gather"):
            v, z = snapshot.vectors.gather(ids) if rerank else (snapshot.vectors.gather_v(ids), None)
        first = v @ unit
        with clock.stage("rerank"):
            scores = engine.scorer.score(v, z, t[None, :])[:, 0] if z is not None else first
        coarse = dict(zip(ids.tolist(), first.tolist(), strict=True))
        exact = dict(zip(ids.tolist(), np.asarray(scores).tolist(), strict=True))
    rows = catalog.segment_rows(sorted(set(best.values())), snapshot.generation) if best else {}
    hits: list[SearchHit] = []
    for rank, f in enumerate(fused, start=1):
        s = f.spoken
        if f.visual is not None:
            h = f.visual
            if s is not None:  # one moment: the X-CLIP range widened to hold the cue's segments
                h = replace(
                    h,
                    start=min(h.start, s.start),
                    end=max(h.end, s.end),
                    segment_ids=tuple(sorted({*h.segment_ids, *s.segment_ids})),
                )
            hits.append(replace(h, rank=rank, match=f.match, cue=s.cue if s else None, fused_score=f.fused_score))
            continue
        assert s is not None
        seg = best[id(s)]
        row = rows.get(seg)
        if row is None:  # retired since the text was read (another writer): nothing to point at
            continue
        hits.append(
            SearchHit(
                rank=rank,
                video_id=s.video_id,
                path=str(row["path"]),
                start=s.start,
                end=s.end,
                score=float(exact[seg]),
                coarse_score=float(coarse[seg]),
                segment_id=seg,
                best_start=float(row["start_s"]),
                best_end=float(row["end_s"]),
                segment_ids=s.segment_ids,
                match="speech",
                cue=s.cue,
                fused_score=f.fused_score,
            )
        )
    hits = [replace(h, rank=i) for i, h in enumerate(hits, start=1)]
    return engine._results(hits, clock, started, visual.candidates)


def _normalised(values: Sequence[float]) -> list[float]:
    if not values:
        return []
    lo, hi = min(values), max(values)
    if hi - lo <= 1e-12:
        return [1.0] * len(values)
    return [(x - lo) / (hi - lo) for x in values]


__all__ = [
    "DEFAULT_FUSION",
    "RRF_K",
    "Fused",
    "FusionMethod",
    "SpokenMoment",
    "fuse",
    "fused_search",
    "spoken_moments",
    "text_query_for",
]
