"""Search by text and by example."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from ...errors import InvalidArgumentError
from ...index import MAX_CANDIDATES, MAX_TOP_K
from ..schemas import (
    ID_MAX,
    MAX_FILTER_CHARS,
    MAX_FILTER_IDS,
    MAX_FILTERS,
    ConceptBody,
    FeedbackSearchBody,
    SimilarBody,
    outcome_json,
    search_filter,
)
from ..security import require_writer
from ..service import IndexService, SearchOptions

router = APIRouter(prefix="/api", tags=["search"])
FilterId = Annotated[int, Field(ge=1, le=ID_MAX)]


def _service(request: Request) -> IndexService:
    return request.app.state.service


@router.get("/search", summary="Find the moments that match a text query, best first")
async def search(
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=1000, description="What happens in the video")],
    top_k: Annotated[int, Query(ge=1, le=MAX_TOP_K, description="Number of results")] = 10,
    candidates: Annotated[
        int | None, Query(ge=1, le=MAX_CANDIDATES, description="First-stage candidates re-ranked exactly")
    ] = None,
    rerank: Annotated[bool, Query(description="Re-rank with X-CLIP's exact prompted score")] = True,
    per_video: Annotated[bool, Query(description="One hit per video (its best segment); false = every segment")] = True,
    path: Annotated[
        str | None,
        Query(max_length=1024, description="Shell glob over the path, e.g. *.webm ([!x] or [^x] negates a class)"),
    ] = None,
    video_id: Annotated[
        list[Annotated[int, Field(ge=1, le=ID_MAX)]] | None,
        Query(max_length=MAX_FILTER_IDS, description="Only these videos (repeatable)"),
    ] = None,
    min_duration: Annotated[float | None, Query(ge=0, allow_inf_nan=False, description="Video length >= s")] = None,
    max_duration: Annotated[float | None, Query(ge=0, allow_inf_nan=False, description="Video length <= s")] = None,
    filter: Annotated[
        list[Annotated[str, Field(max_length=MAX_FILTER_CHARS)]] | None,
        Query(max_length=MAX_FILTERS, description="FIELD OP VALUE, as the command line's --filter (repeatable)"),
    ] = None,
    path_prefix: Annotated[
        list[Annotated[str, Field(max_length=1024)]] | None,
        Query(max_length=MAX_FILTERS, description="Only paths starting with this (repeatable: any of them)"),
    ] = None,
    tag: Annotated[
        list[Annotated[str, Field(max_length=300)]] | None,
        Query(max_length=MAX_FILTERS, description="Only segments carrying this saved label (repeatable: all)"),
    ] = None,
    min_score: Annotated[float | None, Query(allow_inf_nan=False, description="Leave out results below this")] = None,
    merge: Annotated[bool, Query(description="Widen each video's hit over adjacent matching segments")] = True,
    match: Annotated[
        Literal["visual", "speech", "both"] | None,
        Query(
            description="Match what is shown (X-CLIP), what is said (subtitles, transcripts) or both, fused "
            "(default: both when the index holds any subtitle or transcript line, else visual)"
        ),
    ] = None,
) -> dict[str, Any]:
    where, echoed = search_filter(
        path,
        list(video_id or ()),
        min_duration,
        max_duration,
        filters=list(filter or ()),
        path_prefix=list(path_prefix or ()),
        tags=list(tag or ()),
    )
    options = SearchOptions(top_k, candidates, rerank, per_video, where, min_score, merge, match)
    # Async, so that a client that leaves (the page aborts a stale search as the user types on) takes its
    # search off the model thread's queue (`IndexService.search_while_connected`).
    outcome = await _service(request).search_while_connected(q, options, request.is_disconnected)
    return outcome_json(outcome, query=q, filters=echoed)


@router.post("/search/similar", summary="Query by example: moments that look like an indexed segment")
def similar(request: Request, body: SimilarBody) -> dict[str, Any]:
    where = body.filters.to_filter() if body.filters else None
    outcome = _service(request).similar(
        body.segment_id,
        top_k=body.top_k,
        candidates=body.candidates,
        per_video=body.per_video,
        include_same_video=body.include_same_video,
        where=where,
    )
    return outcome_json(outcome, example=outcome.example)


@router.post("/search", summary="A search refined by feedback (segments marked up and down), or by a learned concept")
def feedback_search(request: Request, body: FeedbackSearchBody) -> dict[str, Any]:
    where = body.filters.to_filter() if body.filters else None
    service = _service(request)
    if body.concept is not None:
        outcome = service.search_concept(body.concept, body.q, top_k=body.top_k, per_video=body.per_video, where=where)
        return outcome_json(outcome, query=body.q, concept=body.concept)
    if body.q is None:
        raise InvalidArgumentError("Give q (a query), with positive/negative segment ids, or a concept")
    if not body.positive:
        outcome = service.search(body.q, top_k=body.top_k, per_video=body.per_video, where=where)
        return outcome_json(outcome, query=body.q)
    outcome = service.refine(
        body.q, body.positive, body.negative, top_k=body.top_k, per_video=body.per_video, where=where
    )
    return outcome_json(outcome, query=body.q, positive=body.positive, negative=body.negative)


@router.get("/concepts", summary="The concepts learned on this index")
def list_concepts(request: Request) -> dict[str, Any]:
    return {"concepts": _service(request).concepts()}


@router.post(
    "/concepts",
    summary="Save a query's feedback as a concept: its name becomes a label scored by it (write operation)",
    dependencies=[Depends(require_writer)],
)
def save_concept(request: Request, body: ConceptBody) -> dict[str, Any]:
    return {"learned": _service(request).save_concept(body.name, body.q, body.positive, body.negative)}


@router.delete(
    "/concepts/{name}", summary="Forget a learned concept (write operation)", dependencies=[Depends(require_writer)]
)
def forget_concept(request: Request, name: str) -> dict[str, Any]:
    _service(request).forget_concept(name)
    return {"forgotten": name}
