"""Text to ranked, time-stamped moments: ANN candidates on ``cos(v, t)``, then X-CLIP's exact prompted score.

No fixed pair of vectors gives X-CLIP's score (the text embedding depends on the video), so the first stage
only proposes candidates and the second computes ``cos(v, t + PG(t, Z))`` for each of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .encoder import XClipEncoder
from .errors import InvalidArgumentError
from .prompting import PromptScorer
from .store.snapshot import Candidate, Snapshot

DEFAULT_TOP_K = 10
DEFAULT_CANDIDATES = 200
MAX_TOP_K = 10_000


@dataclass(frozen=True)
class SearchHit:
    """One result: a segment of a video, with its exact score and its first-stage cosine."""

    rank: int
    video_id: int
    path: str
    start: float
    end: float
    score: float
    coarse_score: float
    segment_id: int

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
    if candidates < top_k:
        raise InvalidArgumentError(f"Invalid candidates ({candidates}). It must be at least top-k ({top_k}).")
    return candidates


class SearchEngine:
    """Two-stage search over one snapshot with one model."""

    def __init__(self, snapshot: Snapshot, encoder: XClipEncoder, scorer: PromptScorer) -> None:
        self.snapshot = snapshot
        self.encoder = encoder
        self.scorer = scorer

    def search(
        self,
        query: str,
        *,
        top_k: int = DEFAULT_TOP_K,
        candidates: int | None = None,
        rerank: bool = True,
        per_video: bool = True,
    ) -> list[SearchHit]:
        """Rank segments for `query`; one hit per video (its best segment) unless `per_video` is False."""
        n_candidates = check_search_args(top_k, candidates)
        t = self.encoder.encode_texts([query])[0]
        unit = t / np.linalg.norm(t)
        found = self.snapshot.coarse(unit, n_candidates)
        if not found:
            return []
        if rerank:
            ids = np.array([c.segment_id for c in found], dtype=np.int64)
            v, z = self.snapshot.vectors.gather(ids)
            exact = self.scorer.score(v, z, t[None, :])[:, 0]
            scored = sorted(zip(exact.tolist(), found, strict=True), key=lambda p: -p[0])
        else:
            scored = [(c.coarse_score, c) for c in found]
        return _to_hits(scored, top_k, per_video)


def _to_hits(scored: list[tuple[float, Candidate]], top_k: int, per_video: bool) -> list[SearchHit]:
    hits: list[SearchHit] = []
    seen_videos: set[int] = set()
    for score, cand in scored:
        video_id = int(cand.row["video_id"])
        if per_video:
            if video_id in seen_videos:
                continue
            seen_videos.add(video_id)
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
