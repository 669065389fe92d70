"""Request bodies and the JSON shapes of responses (hits keep DESIGN.md §4's keys and add ids and URLs)."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidArgumentError
from ..index import MAX_CANDIDATES, MAX_TOP_K, SearchFilter, SearchHit, SegmentRow, Shot, VideoListing, VideoRow
from .service import SearchOutcome

MAX_LABEL_LENGTH = 300
MAX_REQUEST_LABELS = 1000
ID_MAX = 2**62  # beyond SQLite's integers; larger values are refused before any query
MAX_FILTER_IDS = 1000


MAX_FILTERS = 64
MAX_FILTER_CHARS = 2000


def search_filter(
    path: str | None,
    video_ids: list[int],
    min_duration: float | None,
    max_duration: float | None,
    *,
    filters: list[str] | None = None,
    path_prefix: list[str] | None = None,
    tags: list[str] | None = None,
) -> tuple[SearchFilter | None, dict[str, Any] | None]:
    """The web form's filters as the library's `SearchFilter`, parsed exactly as the command line parses its
    ``--glob`` (`path`), ``--filter``, ``--path-prefix`` and ``--tag``; and as echoed in the response.
    (None, None) when the form restricts nothing."""
    filters, path_prefix, tags = filters or [], path_prefix or [], tags or []
    given = [path, video_ids, filters, path_prefix, tags]
    if not any(given) and min_duration is None and max_duration is None:
        return None, None
    flt = SearchFilter.parse(
        filters,
        path_prefix=path_prefix,
        glob=path or None,
        tags=tags,
        video_ids=video_ids,
        min_duration=min_duration,
        max_duration=max_duration,
    )
    echoed: dict[str, Any] = {
        "path": path or None,
        "video_ids": list(video_ids),
        "min_duration": min_duration,
        "max_duration": max_duration,
    }
    echoed.update({k: v for k, v in (("filter", filters), ("path_prefix", path_prefix), ("tag", tags)) if v})
    return flt, echoed


class FilterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, max_length=1024, description="Shell glob over the absolute path, e.g. *.webm")
    video_ids: list[int] = Field(default_factory=list, max_length=MAX_FILTER_IDS)
    min_duration: float | None = Field(None, ge=0, allow_inf_nan=False, description="Video length >= (seconds)")
    max_duration: float | None = Field(None, ge=0, allow_inf_nan=False, description="Video length <= (seconds)")
    filter: list[str] = Field(default_factory=list, max_length=MAX_FILTERS, description="FIELD OP VALUE strings")
    path_prefix: list[str] = Field(default_factory=list, max_length=MAX_FILTERS)
    tag: list[str] = Field(default_factory=list, max_length=MAX_FILTERS)

    def to_filter(self) -> SearchFilter | None:
        return search_filter(
            self.path,
            self.video_ids,
            self.min_duration,
            self.max_duration,
            filters=self.filter,
            path_prefix=self.path_prefix,
            tags=self.tag,
        )[0]


class SimilarBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    segment_id: int = Field(..., ge=1, le=ID_MAX, description="An indexed segment to use as the query")
    top_k: int = Field(10, ge=1, le=MAX_TOP_K)
    candidates: int | None = Field(None, ge=1, le=MAX_CANDIDATES)
    per_video: bool = Field(True, description="One hit per video (its best segment)")
    include_same_video: bool = Field(False, description="Also return other moments of the example's video")
    filters: FilterBody | None = None


class FeedbackSearchBody(BaseModel):
    """``POST /api/search``: a text search refined by results marked up (`positive`) and down (`negative`), or
    ranked by a learned `concept` (with `q`: fused with X-CLIP's score for it)."""

    model_config = ConfigDict(extra="forbid")

    q: str | None = Field(None, min_length=1, max_length=1000, description="The text query")
    positive: list[int] = Field(default_factory=list, max_length=1000, description="Segment ids marked as matching")
    negative: list[int] = Field(default_factory=list, max_length=1000, description="Segment ids marked as not")
    concept: str | None = Field(None, min_length=1, max_length=200, description="Rank by this learned concept")
    top_k: int = Field(10, ge=1, le=MAX_TOP_K)
    per_video: bool = Field(True, description="One hit per video (its best segment)")
    filters: FilterBody | None = None


class ConceptBody(BaseModel):
    """``POST /api/concepts``: save the concept learned from a query's feedback under `name`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=200, description="The label that will be scored by it")
    q: str = Field(..., min_length=1, max_length=1000, description="The query the feedback refined")
    positive: list[int] = Field(..., min_length=1, max_length=1000, description="Segment ids marked as matching")
    negative: list[int] = Field(default_factory=list, max_length=1000, description="Segment ids marked as not")


class TagBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[str] | str = Field(
        ..., description='Labels as a list, or one comma-separated string: "running, cooking"'
    )
    video_id: int | None = Field(None, ge=1, le=ID_MAX, description="Tag this video; omit to tag the whole index")
    top: int | None = Field(None, ge=1, le=MAX_REQUEST_LABELS, description="Keep the N most probable labels")
    offset: int = Field(0, ge=0, le=ID_MAX, description="Whole-index tagging: first segment of the page")
    limit: int = Field(100, ge=1, le=1000, description="Whole-index tagging: segments per page")
    save: bool = Field(False, description="Store the tags in the index (a write operation: needs the token)")

    def label_list(self) -> list[str]:
        items = self.labels.split(",") if isinstance(self.labels, str) else list(self.labels)
        if len(items) > MAX_REQUEST_LABELS:
            raise InvalidArgumentError(f"Too many labels ({len(items)}). At most {MAX_REQUEST_LABELS} per request.")
        if any(len(s) > MAX_LABEL_LENGTH for s in items):
            raise InvalidArgumentError(f"A label is longer than {MAX_LABEL_LENGTH} characters")
        return items


def thumbnail_url(segment_id: int) -> str:
    return f"/api/segments/{segment_id}/thumbnail"


def stream_url(video_id: int) -> str:
    return f"/api/videos/{video_id}/stream"


def subtitles_url(video_id: int) -> str:
    return f"/api/videos/{video_id}/subtitles.vtt"


def hit_json(hit: SearchHit) -> dict[str, Any]:
    return {
        **hit.to_dict(),
        "segment_id": hit.segment_id,
        "name": os.path.basename(hit.path),
        "thumbnail_url": thumbnail_url(hit.segment_id),
        "video_url": stream_url(hit.video_id),
        "subtitles_url": subtitles_url(hit.video_id),
    }


def outcome_json(outcome: SearchOutcome, **extra: Any) -> dict[str, Any]:
    return {
        **extra,
        "generation": outcome.generation,
        "results": [hit_json(h) for h in outcome.hits],
        "timings_ms": {k: round(v * 1000, 3) for k, v in outcome.timings.items()},
    }


def segment_json(row: SegmentRow, *, with_video: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "segment_id": row.id,
        "seq": row.seq,
        "start": round(row.start_s, 3),
        "end": round(row.end_s, 3),
        "frame_start": row.frame_start,
        "frame_end": row.frame_end,
        "thumbnail_url": thumbnail_url(row.id),
    }
    if with_video:
        out["video_id"] = row.video_id
        out["path"] = row.path
        out["name"] = os.path.basename(row.path)
        out["video_url"] = stream_url(row.video_id)
    return out


def shot_json(shot: Shot) -> dict[str, Any]:
    """One shot of a video: its time range, its segments, and the thumbnail of its middle segment."""
    return {
        "shot": shot.number,
        "start": round(shot.start_s, 3),
        "end": round(shot.end_s, 3),
        "segment_ids": [s.id for s in shot.segments],
        "thumbnail_url": thumbnail_url(shot.representative.id),
    }


def video_json(row: VideoRow, listing: VideoListing | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "video_id": row.id,
        "path": row.path,
        "name": os.path.basename(row.path),
        "status": row.status,
        "reason": row.reason,
        "duration_s": row.duration_s,
        "fps": row.fps,
        "num_frames": row.num_frames,
        "width": row.width,
        "height": row.height,
        "codec": row.codec,
        "size": row.size,
        "indexed_at": row.indexed_at,
        "video_url": stream_url(row.id),
    }
    if listing is not None:
        out["segments"] = listing.segments
        if listing.first_segment is not None:
            out["thumbnail_url"] = thumbnail_url(listing.first_segment)
    return out
