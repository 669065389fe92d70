"""Prometheus metrics: requests by route and status, latencies by route and by search stage, index gauges.

Each app owns its registry (no process-global state, so several apps, e.g. in tests, never mix counts). Routes
are labelled by their template (``/api/videos/{video_id}``), never by the raw path, so a scan of ids cannot blow
up the number of series; methods outside the standard names are labelled ``other`` (`limits.metric_method`), so
random method names cannot either.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .limits import metric_method

__all__ = ["CONTENT_TYPE", "Metrics", "MetricsMiddleware"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The server's metric families in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "xclip_search_http_requests",
            "HTTP requests handled, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "xclip_search_http_request_duration_seconds",
            "Time from request to the end of the response body, by method and route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage = Histogram(
            "xclip_search_search_stage_seconds",
            "Time per search stage: text_encode, first_stage (ANN or filtered scan), gather (reading the "
            "candidates' v and Z), rerank (exact prompted scores), total; similar (query by example), tag.",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.thumbnails = Counter(
            "xclip_search_thumbnails",
            "Thumbnails served or missed, by source (stored, cached, decoded, missing).",
            ["source"],
            registry=self.registry,
        )
        self.abandoned = Counter(
            "xclip_search_searches_abandoned",
            "Searches whose client left before the answer: skipped (never run: the model thread was busy) or "
            "discarded (already running, answer dropped).",
            ["outcome"],
            registry=self.registry,
        )
        self.refreshes = Counter(
            "xclip_search_index_refreshes",
            "Times the server moved to a newer published generation of the index.",
            registry=self.registry,
        )
        self.generation = Gauge(
            "xclip_search_index_generation", "Published generation the server reads.", registry=self.registry
        )
        self.segments = Gauge(
            "xclip_search_index_segments", "Live segments in the generation read.", registry=self.registry
        )

    @contextmanager
    def time_stage(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stage.labels(stage=stage).observe(time.perf_counter() - started)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware (streaming responses pass through untouched) counting and timing every request."""

    def __init__(self, app: Callable[..., Any], metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or ("static" if scope["path"].startswith("/static/") else "other")
            method = metric_method(str(scope.get("method", "GET")))
            self.metrics.requests.labels(method=method, route=template, status=str(status["code"])).inc()
            self.metrics.latency.labels(method=method, route=template).observe(time.perf_counter() - started)
