"""Request bodies and the JSON shapes of responses (hits keep DESIGN.md §4's keys and add ids and URLs)."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidArgumentError
from ..search import MAX_TOP_K, SearchHit
from .catalog_views import MAX_FILTER_IDS, SearchFilters
from .service import MAX_CANDIDATES, SearchOutcome

MAX_LABEL_LENGTH = 300
MAX_REQUEST_LABELS = 1000
ID_MAX = 2**62  # beyond SQLite's integers; larger values are refused before any query


class FilterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, max_length=1024, description="Shell glob over the absolute path, e.g. *.webm")
    video_ids: list[int] = Field(default_factory=list, max_length=MAX_FILTER_IDS)
    min_duration: float | None = Field(None, ge=0, allow_inf_nan=False, description="Video length >= (seconds)")
    max_duration: float | None = Field(None, ge=0, allow_inf_nan=False, description="Video length <= (seconds)")

    def to_filters(self) -> SearchFilters:
        return SearchFilters(self.path, tuple(self.video_ids), self.min_duration, self.max_duration)


class SimilarBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    segment_id: int = Field(..., ge=1, le=ID_MAX, description="An indexed segment to use as the query")
    top_k: int = Field(10, ge=1, le=MAX_TOP_K)
    candidates: int | None = Field(None, ge=1, le=MAX_CANDIDATES)
    per_video: bool = Field(True, description="One hit per video (its best segment)")
    include_same_video: bool = Field(False, description="Also return other moments of the example's video")
    filters: FilterBody | None = None


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


def hit_json(hit: SearchHit) -> dict[str, Any]:
    return {
        **hit.to_dict(),
        "segment_id": hit.segment_id,
        "name": os.path.basename(hit.path),
        "thumbnail_url": thumbnail_url(hit.segment_id),
        "video_url": stream_url(hit.video_id),
    }


def outcome_json(outcome: SearchOutcome, **extra: Any) -> dict[str, Any]:
    return {
        **extra,
        "generation": outcome.generation,
        "results": [hit_json(h) for h in outcome.hits],
        "timings_ms": {k: round(v * 1000, 3) for k, v in outcome.timings.items()},
    }


def segment_json(row: dict[str, Any]) -> dict[str, Any]:
    sid = int(row["id"])
    out: dict[str, Any] = {
        "segment_id": sid,
        "seq": int(row["seq"]),
        "start": round(float(row["start_s"]), 3),
        "end": round(float(row["end_s"]), 3),
        "frame_start": int(row["frame_start"]),
        "frame_end": int(row["frame_end"]),
        "thumbnail_url": thumbnail_url(sid),
    }
    if "video_id" in row:
        out["video_id"] = int(row["video_id"])
        out["path"] = row["path"]
        out["name"] = os.path.basename(str(row["path"]))
        out["video_url"] = stream_url(int(row["video_id"]))
    return out


def video_json(row: dict[str, Any]) -> dict[str, Any]:
    vid = int(row["id"])
    keys = ("status", "reason", "duration_s", "fps", "num_frames", "width", "height", "codec", "size", "indexed_at")
    out = {"video_id": vid, "path": row["path"], "name": os.path.basename(str(row["path"]))}
    out.update({k: row.get(k) for k in keys})
    out["video_url"] = stream_url(vid)
    if "segments" in row and not isinstance(row["segments"], list):
        out["segments"] = int(row["segments"])
    if row.get("first_segment") is not None:
        out["thumbnail_url"] = thumbnail_url(int(row["first_segment"]))
    return out
