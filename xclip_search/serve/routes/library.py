"""Video and segment metadata, by id."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request

from ..schemas import ID_MAX, segment_json, shot_json, video_json
from ..service import IndexService

router = APIRouter(prefix="/api", tags=["library"])

VideoId = Annotated[int, Path(ge=1, le=ID_MAX, description="A video id from search results or /api/videos")]
SegmentId = Annotated[int, Path(ge=1, le=ID_MAX, description="A segment id from search results")]


def _service(request: Request) -> IndexService:
    return request.app.state.service


@router.get("/videos", summary="List the index's videos (by path), with their status and live segment count")
def list_videos(
    request: Request,
    status: Annotated[Literal["indexed", "failed", "skipped", "removed"] | None, Query()] = None,
    name: Annotated[str | None, Query(max_length=300, description="Substring of the path")] = None,
    offset: Annotated[int, Query(ge=0, le=ID_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    total, rows, generation = _service(request).videos(status=status, name=name, offset=offset, limit=limit)
    videos = [video_json(r.video, r) for r in rows]
    return {"generation": generation, "total": total, "offset": offset, "videos": videos}


@router.get("/videos/{video_id}", summary="One video's metadata, its live segments and its shots")
def get_video(request: Request, video_id: VideoId) -> dict[str, Any]:
    row, shots, generation = _service(request).video_shots(video_id)
    listed = [segment_json(s, with_video=False) for shot in shots for s in shot.segments]
    return {**video_json(row), "generation": generation, "segments": listed, "shots": [shot_json(s) for s in shots]}


@router.get("/segments/{segment_id}", summary="One segment's metadata (video, time range, frame range)")
def get_segment(request: Request, segment_id: SegmentId) -> dict[str, Any]:
    row, generation = _service(request).segment(segment_id)
    return {**segment_json(row), "generation": generation}
