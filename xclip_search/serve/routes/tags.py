"""Open-vocabulary tagging of one video or of the whole index, from stored vectors."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..schemas import TagBody
from ..security import require_writer
from ..service import IndexService

router = APIRouter(prefix="/api", tags=["tag"])


@router.post("/tag", summary="Label probabilities for one video's segments, or a page of the whole index")
def tag(request: Request, body: TagBody) -> JSONResponse:
    service: IndexService = request.app.state.service
    labels = body.label_list()
    saved = None
    if body.save:
        require_writer(request)
        saved = service.save_tags(labels, body.video_id, top=body.top)
    if body.video_id is not None:
        out = service.tag_video(body.video_id, labels, top=body.top)
    else:
        out = service.tag_index(labels, top=body.top, offset=body.offset, limit=body.limit)
    if saved is not None:
        out["saved"] = saved
    return JSONResponse(out)  # rendered here, on a request thread: a large answer never blocks the event loop
