"""Search by text and by example."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import Field

from ...search import MAX_TOP_K
from ..catalog_views import MAX_FILTER_IDS, SearchFilters
from ..schemas import ID_MAX, SimilarBody, outcome_json
from ..service import MAX_CANDIDATES, IndexService

router = APIRouter(prefix="/api", tags=["search"])
FilterId = Annotated[int, Field(ge=1, le=ID_MAX)]


def _service(request: Request) -> IndexService:
    return request.app.state.service


@router.get("/search", summary="Find the moments that match a text query, best first")
def search(
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=1000, description="What happens in the video")],
    top_k: Annotated[int, Query(ge=1, le=MAX_TOP_K, description="Number of results")] = 10,
    candidates: Annotated[
        int | None, Query(ge=1, le=MAX_CANDIDATES, description="First-stage candidates re-ranked exactly")
    ] = None,
    rerank: Annotated[bool, Query(description="Re-rank with X-CLIP's exact prompted score")] = True,
    per_video: Annotated[bool, Query(description="One hit per video (its best segment); false = every segment")] = True,
    path: Annotated[str | None, Query(max_length=1024, description="Shell glob over the path, e.g. *.webm")] = None,
    video_id: Annotated[
        list[Annotated[int, Field(ge=1, le=ID_MAX)]] | None,
        Query(max_length=MAX_FILTER_IDS, description="Only these videos (repeatable)"),
    ] = None,
    min_duration: Annotated[float | None, Query(ge=0, allow_inf_nan=False, description="Video length >= s")] = None,
    max_duration: Annotated[float | None, Query(ge=0, allow_inf_nan=False, description="Video length <= s")] = None,
) -> dict[str, Any]:
    filters = SearchFilters(path or None, tuple(video_id or ()), min_duration, max_duration)
    outcome = _service(request).search(
        q, top_k=top_k, candidates=candidates, rerank=rerank, per_video=per_video, filters=filters
    )
    return outcome_json(outcome, query=q, filters=filters.to_dict() if filters.active else None)


@router.post("/search/similar", summary="Query by example: moments that look like an indexed segment")
def similar(request: Request, body: SimilarBody) -> dict[str, Any]:
    filters = body.filters.to_filters() if body.filters else None
    outcome = _service(request).similar(
        body.segment_id,
        top_k=body.top_k,
        candidates=body.candidates,
        per_video=body.per_video,
        include_same_video=body.include_same_video,
        filters=filters,
    )
    return outcome_json(outcome, example=outcome.example)
