"""Video bytes (with HTTP ranges, so the browser can seek) and segment thumbnails, by id only."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from ..media import FileRangeResponse, OpenedFile, Unsatisfiable, content_type, parse_range
from ..service import IndexService
from ..thumbnails import ThumbnailSource
from .library import SegmentId, VideoId

router = APIRouter(prefix="/api", tags=["media"])


_RANGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    206: {"description": "Partial content"},
    416: {"description": "Range not satisfiable"},
}


@router.get(
    "/videos/{video_id}/stream",
    summary="The video file, with Range support (206 partial content, 416 when unsatisfiable)",
    operation_id="stream_video",
    response_class=Response,
    responses=_RANGE_RESPONSES,
)
@router.head(
    "/videos/{video_id}/stream",
    summary="The video file's headers (size, type, ranges) without its body",
    operation_id="stream_video_head",
    response_class=Response,
    responses=_RANGE_RESPONSES,
)
def stream_video(request: Request, video_id: VideoId) -> Response:
    service: IndexService = request.app.state.service
    row, _segments, _generation = service.video(video_id)
    resolved = service.guard().check(row.path)
    if resolved is None:
        if not os.path.lexists(row.path):
            raise HTTPException(404, f"The file of video {video_id} is gone; re-index to update the catalog")
        raise HTTPException(403, f"Video {video_id} is not a playable file inside the indexed folders")
    try:
        opened = OpenedFile(resolved)
    except OSError as exc:
        raise HTTPException(404, f"The file of video {video_id} cannot be opened") from exc
    try:
        return _file_response(request, opened, content_type(resolved) or "application/octet-stream")
    except BaseException:
        opened.close()  # the response never took the file: close it here (FileRangeResponse closes it otherwise)
        raise


@router.get(
    "/videos/{video_id}/subtitles.vtt",
    summary="The video's subtitles and transcript lines as WebVTT, from the catalog (empty when it has none)",
    operation_id="video_subtitles",
    response_class=Response,
    responses={200: {"content": {"text/vtt": {}}}},
)
def video_subtitles(request: Request, video_id: VideoId) -> Response:
    service: IndexService = request.app.state.service
    return Response(service.subtitles_vtt(video_id), media_type="text/vtt; charset=utf-8")


def _file_response(request: Request, opened: OpenedFile, media_type: str) -> Response:
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": opened.etag,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    try:
        wanted = parse_range(request.headers.get("range"), opened.size)
    except Unsatisfiable:
        opened.close()
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{opened.size}"})
    if_range = request.headers.get("if-range")
    if wanted is not None and if_range is not None and if_range.strip() != opened.etag:
        wanted = None  # the client's copy is stale: send the whole current file
    if wanted is None:
        status, start, length = 200, 0, opened.size
    else:
        status, start, length = 206, wanted.start, wanted.length
        headers["Content-Range"] = f"bytes {wanted.start}-{wanted.end}/{opened.size}"
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        opened.close()
        return Response(status_code=status, headers=headers, media_type=media_type)
    return FileRangeResponse(opened, start, length, status_code=status, headers=headers, media_type=media_type)


@router.get(
    "/segments/{segment_id}/thumbnail",
    summary="A small JPEG of the segment's representative frame",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "No thumbnail can be made"}},
)
def segment_thumbnail(request: Request, segment_id: SegmentId) -> Response:
    service: IndexService = request.app.state.service
    thumbs: ThumbnailSource = request.app.state.thumbnails
    row, _generation = service.segment(segment_id)
    key = f"{service.directory}|{service.index.snapshot.manifest.created_at}|{segment_id}"
    etag = '"' + hashlib.sha256(key.encode()).hexdigest()[:24] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    data, source = thumbs.get(row)
    service.metrics.thumbnails.labels(source=source).inc()
    if data is None:
        raise HTTPException(404, f"No thumbnail for segment {segment_id}: its video cannot be decoded here")
    return Response(data, media_type="image/jpeg", headers=headers)
