"""Health, index status and failures, re-indexing, and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from ...errors import XClipSearchError
from ..jobs import ReindexJob
from ..metrics import CONTENT_TYPE
from ..security import require_writer
from ..service import IndexService

router = APIRouter(tags=["system"])


def _service(request: Request) -> IndexService:
    return request.app.state.service


@router.get(
    "/api/health",
    summary="Liveness: the index is readable (else 503 with what is wrong); whether the model is loaded yet",
)
def health(request: Request) -> Response:
    service = _service(request)
    problems: list[dict[str, str | None]] = []
    generation: int | None = None
    try:
        generation = service.pin()
        if service.refresh_error is not None:  # the newest manifest could not be read: serving an older one
            problems.append(_problem(service.refresh_error))
        service.index.check_readable()  # the manifest on disk now, verified as a new reader would; the catalog
    except XClipSearchError as exc:  # the store's errors (missing, corrupt, damaged catalog, ...) say what to do
        problems.append(_problem(exc))
    except Exception as exc:  # anything else still makes an answer, never a 500 from the health check
        problems.append({"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})
    body: dict[str, Any] = {
        "status": "error" if problems else "ok",
        "generation": generation,
        "model_loaded": service.model_loaded,
    }
    if problems:
        body["problems"] = [dict(p) for p in {p["error"]: p for p in problems}.values()]
        body["error"], body["hint"] = problems[0]["error"], problems[0].get("hint")
    return JSONResponse(body, status_code=503 if problems else 200)


def _problem(exc: XClipSearchError) -> dict[str, str | None]:
    return {"error": exc.message, "hint": exc.hint}


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
