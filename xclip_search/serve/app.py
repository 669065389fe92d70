"""The application factory: one `IndexService`, the routes, the page, errors as one-line JSON, metrics.

Errors keep the command line's contract in HTTP form: ``{"error": "<one line>", "hint": "<what to do>"}`` with
a status that says whose fault it is (4xx: the request; 5xx: the index or the server).
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import (
    ClientGoneError,
    DependencyError,
    IndexBusyError,
    IndexNotFoundError,
    InvalidArgumentError,
    NotFoundError,
    RequestTooLargeError,
    ServerBusyError,
    UnsupportedError,
    VideoError,
    XClipSearchError,
)
from ..index import Index
from .jobs import ReindexJob
from .limits import RequestLimitsMiddleware, route_methods
from .metrics import Metrics, MetricsMiddleware
from .routes import library, media, search, system, tags
from .security import AccessPolicy, HostCheckMiddleware, is_loopback
from .service import IndexService
from .thumbnails import ThumbnailSource

STATIC_DIR = Path(__file__).parent / "static"
log = logging.getLogger("xclip_search.serve")

_STATUS: list[tuple[type[XClipSearchError], int]] = [
    (NotFoundError, 404),
    (RequestTooLargeError, 413),
    (ServerBusyError, 429),
    (ClientGoneError, 499),  # nginx's "client closed request": nobody reads it, the metrics count it
    (InvalidArgumentError, 400),
    (UnsupportedError, 501),
    (DependencyError, 501),
    (IndexBusyError, 409),
    (IndexNotFoundError, 503),
    (VideoError, 422),
]
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class ServeSettings:
    """How to serve one index. `extra_hosts` adds Host names a loopback server answers to (tests: testserver)."""

    index_dir: Path
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    device: str | None = None
    model: str | None = None
    warm: bool = True
    threads: int | None = None  # threads one search may use (None: torch's default, all cores)
    extra_hosts: tuple[str, ...] = field(default_factory=tuple)


def create_app(settings: ServeSettings, *, index: Index | None = None) -> FastAPI:
    """Build the ASGI app for `settings` (opens the index now: a missing index fails here, not per request)."""
    opened = index or Index.open(settings.index_dir, device=settings.device, model=settings.model)
    metrics = Metrics()
    service = IndexService(opened, metrics, search_threads=settings.threads)
    policy = AccessPolicy(
        token=settings.token or None, loopback=is_loopback(settings.host), extra_hosts=settings.extra_hosts
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.warm:
            threading.Thread(target=_warm, args=(service,), name="xclip-warm", daemon=True).start()
        try:
            yield
        finally:
            app.state.jobs.stop()
            app.state.thumbnails.close()  # the decode workers of on-demand thumbnails
            service.close()

    app = FastAPI(
        title="xclip-search",
        version=__version__,
        summary="Search, watch and tag the moments of an indexed video library (X-CLIP).",
        docs_url=None,  # the default Swagger UI loads its assets from a CDN; /docs below is served locally
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.policy = policy
    app.state.writes = "token" if policy.token else ("open (localhost)" if policy.loopback else "disabled")
    app.state.jobs = ReindexJob(service.directory, settings.device)
    app.state.thumbnails = ThumbnailSource(
        service.directory,
        opened.snapshot.manifest.model.num_frames,
        allow_path=lambda path: service.guard().check(path),
    )
    for module in (search, tags, library, media, system):
        app.include_router(module.router)
    _add_pages(app)
    _add_error_handlers(app)
    app.add_middleware(RequestLimitsMiddleware, methods=route_methods(app.routes))
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(HostCheckMiddleware, policy=policy)
    return app


def _warm(service: IndexService) -> None:
    """Load the model, then move every object alive by then out of the cyclic garbage collector's sight.

    A loaded server holds ~430,000 long-lived Python objects (torch, transformers, the model's modules, the
    catalog's machinery). Each full (generation 2) collection walked all of them: under tagging load, which
    allocates many containers, a collection paused every thread for 110-240 ms, and a search caught by one took
    ~250 ms where it otherwise took under 50 (`scripts/bench_serve.py --tag-load 3` on the demo index).
    ``gc.freeze()`` after start-up (as CPython's documentation advises for long-running servers) leaves those
    objects to reference counting alone; the longest collection then took 1.5 ms. Objects made later are
    collected as usual."""
    try:
        service.warm()
    except XClipSearchError as exc:  # the first search will report it to the user
        log.warning("model not loaded at start-up: %s", exc)
    gc.collect()
    gc.freeze()


def _add_pages(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs.html", headers=_PAGE_HEADERS)


def _error(status: int, message: str, hint: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if hint:
        body["hint"] = hint
    body.update(extra)
    return JSONResponse(body, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(XClipSearchError)
    async def library_error(_request: Request, exc: XClipSearchError) -> JSONResponse:
        status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
        return _error(status, exc.message, exc.hint)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "Request failed"
        response = _error(exc.status_code, message)
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = list(first.get("loc", ()))
        if loc and loc[0] in ("query", "body", "path", "header", "cookie"):
            loc = loc[1:]  # the location kind, not a field name
        where = ".".join(str(p) for p in loc)
        message = f"Invalid request: {where + ': ' if where else ''}{first.get('msg', 'malformed input')}"
        detail = [{"loc": e.get("loc"), "msg": e.get("msg"), "type": e.get("type")} for e in errors]
        return _error(422, message, detail=jsonable_encoder(detail))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return _error(500, f"Internal error ({type(exc).__name__}); see the server log")
