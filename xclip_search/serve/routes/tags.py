"""Open-vocabulary tagging of one video or of the whole index, from stored vectors."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..schemas import TagBody
from ..security import require_writer
from ..service import IndexService

router = APIRouter(prefix="/api", tags=["tag"])


@router.post("/tag", summary="Label probabilities for one video's segments, or a page of the whole index")
def tag(request: Request, body: TagBody) -> Response:
    service: IndexService = request.app.state.service
    labels = body.label_list()
    extra = {}
    if body.save:
        require_writer(request)
        extra["saved"] = service.save_tags(labels, body.video_id, top=body.top)
    if body.video_id is not None:
        out = service.tag_video(body.video_id, labels, top=body.top)
    else:
        out = service.tag_index(labels, top=body.top, offset=body.offset, limit=body.limit)
    # The segments' entries were rendered to JSON on the model thread, a slice at a time (`serve.modelqueue`):
    # here only bytes are joined, so a large answer neither blocks the event loop nor holds the GIL for long.
    return Response(out.body(**extra), media_type="application/json")
