"""Health, index status and failures, re-indexing, and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from ..jobs import ReindexJob
from ..metrics import CONTENT_TYPE
from ..security import require_writer
from ..service import IndexService

router = APIRouter(tags=["system"])


def _service(request: Request) -> IndexService:
    return request.app.state.service


@router.get("/api/health", summary="Liveness: the index is readable; whether the model is loaded yet")
def health(request: Request) -> dict[str, Any]:
    service = _service(request)
    generation = service.pin()
    return {"status": "ok", "generation": generation, "model_loaded": service.model_loaded}


@router.get("/api/index", summary="Index status: counts, model, ANN, sizes, failures, re-index job")
def index_status(
    request: Request, failures: Annotated[int, Query(ge=0, le=10_000, description="Failures to list")] = 50
) -> dict[str, Any]:
    service = _service(request)
    info = service.info()
    all_failures = service.failures()
    info["failure_count"] = len(all_failures)
    info["failures"] = [{"path": f.path, "status": f.status, "reason": f.reason} for f in all_failures[:failures]]
    info["roots"] = service.recorded_roots()
    info["reindex"] = request.app.state.jobs.status()
    info["writes"] = request.app.state.writes
    return info


@router.get("/api/index/update", summary="State of the latest re-index job")
def reindex_status(request: Request) -> dict[str, Any]:
    jobs: ReindexJob = request.app.state.jobs
    return jobs.status()


@router.post(
    "/api/index/update",
    summary="Re-index the recorded folders in the background (write operation: needs the token)",
    dependencies=[Depends(require_writer)],
    status_code=202,
)
def reindex(request: Request) -> dict[str, Any]:
    jobs: ReindexJob = request.app.state.jobs
    return jobs.start(_service(request).recorded_roots())


@router.get("/metrics", summary="Prometheus metrics (text format)", response_class=Response)
def metrics(request: Request) -> Response:
    service = _service(request)
    service.pin()
    return Response(service.metrics.render(), media_type=CONTENT_TYPE)
