"""Retrieval quality of an index against a ground truth: what ``xclip-search eval`` reports.

The ground truth is JSON Lines, one query per line::

    {"query": "red circle moving left", "relevant": ["clips/a.mp4", {"path": "b.mp4", "start": 4.0, "end": 6.5}]}
    {"query": "blue square growing", "relevant": [{"path": "scenes-1.mp4", "start": 2.0, "end": 4.0}],
     "within": "scenes-1.mp4"}

`relevant` names the videos that answer the query (paths relative to the ground-truth file, or absolute), each
optionally with the time span that shows it; `within` restricts the search to one video (finding the moment
inside a known video); `filter` takes search filters (``"duration>=30"``) as the CLI's ``--filter`` does.

For each query the index is searched three ways, so a user sees what the two-stage search costs them:

- ``first_stage``: the first-stage cosine ``cos(v, t)`` alone (``--no-rerank``);
- ``rerank``: the ordinary search, first stage then X-CLIP's exact score over the candidates;
- ``exhaustive``: X-CLIP's exact score of every segment (the ranking the rerank approximates).

Ranks are per video (one hit per video, as a search shows them): the rank of the first relevant video.
Reported: recall@1/5/10, the median rank (None when more than half the queries find nothing relevant), the mean
reciprocal rank, and for queries with spans the mean temporal IoU of the top hit (its merged range against the
best-overlapping relevant span of its video; 0 when the top video is not relevant).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgumentError

if TYPE_CHECKING:
    from .index import Index
    from .search import SearchHit

KS = (1, 5, 10)
STAGES = ("first_stage", "rerank", "exhaustive")
MAX_QUERIES = 100_000


@dataclass(frozen=True)
class Relevant:
    """A video that answers a query (absolute path), with the span that shows it when known."""

    path: str
    start: float | None = None
    end: float | None = None

    @property
    def has_span(self) -> bool:
        return self.start is not None and self.end is not None


@dataclass(frozen=True)
class TruthQuery:
    query: str
    relevant: tuple[Relevant, ...]
    within: str | None = None
    filters: tuple[str, ...] = ()

    @property
    def has_spans(self) -> bool:
        return any(r.has_span for r in self.relevant)


def load_ground_truth(path: str | os.PathLike[str]) -> list[TruthQuery]:
    """Parse a JSON Lines ground truth; a malformed line is a one-line `InvalidArgumentError` naming it."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"Cannot read the ground truth {file}: {exc}") from exc
    base = file.resolve().parent
    out: list[TruthQuery] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(_query(json.loads(line), base))
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidArgumentError(
                f"{file}, line {number}: {exc}",
                hint='Each line: {"query": "...", "relevant": ["video.mp4", {"path": "v.mp4", "start": 0, "end": 5}]}',
            ) from exc
        if len(out) > MAX_QUERIES:
            raise InvalidArgumentError(f"{file} has more than {MAX_QUERIES} queries")
    if not out:
        raise InvalidArgumentError(f"{file} holds no queries")
    return out


def _absolute(base: Path, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("a video path must be a non-empty string")
    return os.path.abspath(os.path.join(base, os.path.expanduser(value)))


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number of seconds, 0 or more")
    return float(value)


def _query(doc: Any, base: Path) -> TruthQuery:
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object")
    query = doc["query"]
    if not isinstance(query, str) or not query.strip():
        raise ValueError("'query' must be a non-empty string")
    items = doc["relevant"]
    if not isinstance(items, list) or not items:
        raise ValueError("'relevant' must be a non-empty list")
    relevant = []
    for item in items:
        if isinstance(item, str):
            relevant.append(Relevant(_absolute(base, item)))
            continue
        if not isinstance(item, dict):
            raise ValueError("each relevant item is a path or an object with 'path'")
        start, end = item.get("start"), item.get("end")
        if (start is None) != (end is None):
            raise ValueError("a span needs both 'start' and 'end'")
        if start is not None:
            start, end = _seconds(start, "'start'"), _seconds(end, "'end'")
            if end <= start:
                raise ValueError("a span's 'end' must be after its 'start'")
        relevant.append(Relevant(_absolute(base, item["path"]), start, end))
    within = doc.get("within")
    filters = doc.get("filter", [])
    if isinstance(filters, str):
        filters = [filters]
    if not isinstance(filters, list) or not all(isinstance(f, str) for f in filters):
        raise ValueError("'filter' must be a string or a list of strings")
    return TruthQuery(query, tuple(relevant), _absolute(base, within) if within is not None else None, tuple(filters))


@dataclass
class StageMetrics:
    """One way of searching, over every query."""

    recall: dict[int, float]
    median_rank: float | None
    mrr: float
    mean_iou: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            **{f"recall@{k}": round(v, 4) for k, v in self.recall.items()},
            "median_rank": self.median_rank,
            "mrr": round(self.mrr, 4),
            "mean_iou": None if self.mean_iou is None else round(self.mean_iou, 4),
        }


@dataclass
class QueryResult:
    """One query's outcome in one stage: the rank of its first relevant video, and its top hit's IoU."""

    rank: int | None
    iou: float | None


@dataclass
class EvalReport:
    """What ``xclip-search eval`` prints; `to_dict` is its ``--json`` shape."""

    ground_truth: str
    index: str
    queries: int
    with_spans: int
    candidates: int
    exhaustive_candidates: int
    stages: dict[str, StageMetrics] = field(default_factory=dict)
    per_query: dict[str, list[QueryResult]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ground_truth": self.ground_truth,
            "index": self.index,
            "queries": self.queries,
            "with_spans": self.with_spans,
            "candidates": self.candidates,
            "exhaustive_candidates": self.exhaustive_candidates,
            "stages": {name: m.to_dict() for name, m in self.stages.items()},
        }


def temporal_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Intersection over union of two time spans."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def judge(hits: Sequence[SearchHit], truth: TruthQuery) -> QueryResult:
    """The rank of the first hit in a relevant video, and the top hit's IoU (when the truth has spans)."""
    relevant_paths = {r.path for r in truth.relevant}
    rank = next((h.rank for h in hits if h.path in relevant_paths), None)
    iou: float | None = None
    if truth.has_spans:
        iou = 0.0
        if hits:
            top = hits[0]
            spans = [(r.start, r.end) for r in truth.relevant if r.path == top.path and r.has_span]
            iou = max((temporal_iou((top.start, top.end), s) for s in spans), default=0.0)  # type: ignore[arg-type]
    return QueryResult(rank, iou)


def summarize(results: Sequence[QueryResult], ks: Sequence[int] = KS) -> StageMetrics:
    ranks = [r.rank for r in results]
    n = len(ranks)
    recall = {k: sum(1 for r in ranks if r is not None and r <= k) / n for k in ks}
    ordered = sorted(math.inf if r is None else float(r) for r in ranks)
    median = statistics.median(ordered)
    ious = [r.iou for r in results if r.iou is not None]
    return StageMetrics(
        recall=recall,
        median_rank=None if math.isinf(median) else float(median),
        mrr=sum(1.0 / r for r in ranks if r is not None) / n,
        mean_iou=sum(ious) / len(ious) if ious else None,
    )


def evaluate(
    index: Index,
    truth: Sequence[TruthQuery],
    *,
    candidates: int | None = None,
    ground_truth: str = "",
) -> EvalReport:
    """Search every query three ways (see the module docstring) and summarize each."""
    from .search import DEFAULT_CANDIDATES, MAX_CANDIDATES, MAX_TOP_K

    segments = int(index.catalog.live_segment_count(index.generation))
    videos = int(index.catalog.status_counts().get("indexed", 0))
    depth = max(1, min(MAX_TOP_K, videos))  # deep enough to rank every video
    everything = max(1, min(MAX_CANDIDATES, segments))
    pool = candidates or DEFAULT_CANDIDATES
    report = EvalReport(
        ground_truth=ground_truth,
        index=str(index.directory),
        queries=len(truth),
        with_spans=sum(1 for t in truth if t.has_spans),
        candidates=pool,
        exhaustive_candidates=everything,
    )
    per_stage: dict[str, list[QueryResult]] = {name: [] for name in STAGES}
    for t in truth:
        where = [*t.filters, *([f"path={t.within}"] if t.within else [])]
        # A video outside the first stage's C candidates is not found (rank None), as in a search.
        first = index.search(t.query, top_k=min(depth, pool), candidates=pool, rerank=False, where=where or None)
        reranked = index.search(t.query, top_k=min(depth, pool), candidates=pool, where=where or None)
        # Every segment reaches the exact score: a filter keeping all of them makes the first stage an exact
        # scan, and the candidate count covers the whole index.
        exhaustive = index.search(
            t.query, top_k=min(depth, everything), candidates=everything, where=[*where, "video_id>=0"]
        )
        for name, hits in zip(STAGES, (first, reranked, exhaustive), strict=True):
            per_stage[name].append(judge(hits, t))
    report.stages = {name: summarize(results) for name, results in per_stage.items()}
    report.per_query = per_stage
    return report
