"""Open-vocabulary tagging of one video or of the whole index, from stored vectors."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ..schemas import TagBody
from ..security import require_writer
from ..service import IndexService

router = APIRouter(prefix="/api", tags=["tag"])


@router.post("/tag", summary="Label probabilities for one video's segments, or a page of the whole index")
def tag(request: Request, body: TagBody) -> dict[str, Any]:
    service: IndexService = request.app.state.service
    labels = body.label_list()
    if body.save:
        require_writer(request)
        service.save_tags(labels, body.video_id)
    if body.video_id is not None:
        return service.tag_video(body.video_id, labels, top=body.top)
    return service.tag_index(labels, top=body.top, offset=body.offset, limit=body.limit)
