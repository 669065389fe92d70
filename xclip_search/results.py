"""What a search takes and gives back, without the model: its limits, the check of its arguments, and the hits.

Importing this module loads no torch, so every face (command line, Python API, HTTP) refuses a bad ``top_k`` or
``candidates`` in milliseconds, before the model loads, with the same message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import InvalidArgumentError
from .store.cues import Cue

#: how a hit was found (`SearchHit.match`); a search's ``match`` option takes the same words
Match = Literal["visual", "speech", "both"]
MATCHES: tuple[Match, ...] = ("visual", "speech", "both")

DEFAULT_TOP_K = 10
# From scripts/bench_query.py (README, "Search at scale"): recall@10 against exhaustive exact scoring was 0.975 /
# 0.93 at C=25, 1.000 / 0.995 at C=50 and 1.000 from C=100 on the 100k / 1M synthetic indexes; 100 keeps a 2x
# margin over the smallest C that reached 0.98 on both, at half the rerank cost of 200.
DEFAULT_CANDIDATES = 100
MAX_TOP_K = 10_000
MAX_CANDIDATES = 100_000


@dataclass(frozen=True)
class SearchHit:
    """One result: a moment of a video, with its exact score and its first-stage cosine.

    ``start``/``end`` span the merged range; ``best_start``/``best_end`` the best segment inside it.

    ``match`` says how the moment was found: ``visual`` (X-CLIP), ``speech`` (its text: subtitles or
    transcript; `cue` is the line that matched) or ``both``. ``score`` is always X-CLIP's exact score of the best
    segment, also for a moment found only by its text; a fused search ranks by ``fused_score`` (see
    `xclip_search.fusion`), None when nothing was fused.
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
    match: Match = "visual"
    cue: Cue | None = None
    # `fused_score`: the key that ranked a fused search (text and speech, or a query and a learned concept);
    # set with `ranked_by` when a concept ranked the results (`xclip_search.learning`), with its probability.
    # `score` stays X-CLIP's own.
    fused_score: float | None = None
    concept_prob: float | None = None
    ranked_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of DESIGN.md §4 (contract), plus how the moment matched (``match``, ``cue``,
        ``fused_score``) and, when a concept ranked it, the concept's fields."""
        out: dict[str, Any] = {
            "rank": self.rank,
            "video_id": self.video_id,
            "path": self.path,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "score": self.score,
            "coarse_score": self.coarse_score,
            "match": self.match,
            "cue": cue_json(self.cue),
            "fused_score": self.fused_score,
        }
        if self.ranked_by is not None:
            out["ranked_by"] = self.ranked_by
            out["concept_prob"] = self.concept_prob
        return out


def cue_json(cue: Cue | None) -> dict[str, Any] | None:
    """A hit's matching cue as JSON (``{text, start, end, language, source}``), or None."""
    if cue is None:
        return None
    return {
        "text": cue.text,
        "start": round(cue.start, 3),
        "end": round(cue.end, 3),
        "language": cue.language,
        "source": cue.source,
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


def check_query(query: str) -> None:
    if not query.strip():
        raise InvalidArgumentError("Empty query", hint="Type what happens in the video, e.g. 'a dog running'.")


def check_match(match: str | None) -> None:
    if match is not None and match not in MATCHES:
        raise InvalidArgumentError(f"Invalid match {match!r}. It must be one of: {', '.join(MATCHES)}.")


def check_min_score(min_score: float | None) -> None:
    if min_score is not None and not math.isfinite(min_score):
        raise InvalidArgumentError(f"Invalid min-score ({min_score}). It must be a finite number.")


class SearchResults(list[SearchHit]):
    """Ranked hits (a plain list to whoever wants one) that also say which generation they were read from, how
    many first-stage candidates were scored, and how long each stage took in seconds: ``text_encode`` (text
    searches), ``first_stage`` (filter, ANN or scan), ``gather`` (reading v/Z), ``rerank`` (exact scores),
    ``merge`` (widening ranges, besides its gather and rerank) and ``total``."""

    def __init__(
        self,
        hits: list[SearchHit] | None = None,
        *,
        generation: int = 0,
        timings: dict[str, float] | None = None,
        candidates: int = 0,
    ) -> None:
        super().__init__(hits or [])
        self.generation = generation
        self.timings: dict[str, float] = dict(timings or {})
        self.candidates = candidates


__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_TOP_K",
    "MATCHES",
    "MAX_CANDIDATES",
    "MAX_TOP_K",
    "Match",
    "SearchHit",
    "SearchResults",
    "check_match",
    "check_min_score",
    "check_query",
    "check_search_args",
    "cue_json",
]
