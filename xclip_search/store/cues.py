"""A timed line of text that belongs to a video: a subtitle cue or a transcribed phrase.

One record for every source (sidecar subtitle files, text streams inside the container, speech transcribed from
the audio), so the catalog, full-text search, fusion with X-CLIP's moments and export handle them one way.
It lives in the store because the catalog keeps it; the indexer (parsers, the speech model) produces it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CueSource = Literal["sidecar", "embedded", "speech"]
CUE_SOURCES: tuple[CueSource, ...] = ("sidecar", "embedded", "speech")


@dataclass(frozen=True)
class Cue:
    """`text` shown or said from `start` to `end` seconds of its video (`language` a BCP-47-ish tag or None)."""

    text: str
    start: float
    end: float
    language: str | None
    source: CueSource

    def __post_init__(self) -> None:
        if not (self.end >= self.start >= 0.0):
            raise ValueError(f"a cue needs 0 <= start <= end, got [{self.start}, {self.end}]")
        if self.source not in CUE_SOURCES:
            raise ValueError(f"unknown cue source {self.source!r}")


@dataclass(frozen=True)
class StoredCue:
    """A cue as the catalog keeps it: its row id and its video's id."""

    id: int
    video_id: int
    cue: Cue


@dataclass(frozen=True)
class CueMatch:
    """A cue that a full-text query matched, with the engine's relevance (larger is better; BM25 on SQLite,
    ``ts_rank`` on PostgreSQL, so only its order is comparable across catalogs)."""

    stored: StoredCue
    score: float
