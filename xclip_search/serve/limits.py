"""Bounded work per request: body size, method names, and the cost of tagging and search requests.

- **Body size.** A request body may hold at most `MAX_BODY_BYTES` (the largest legitimate body, 1,000 labels of
  300 characters, is well under it). A larger ``Content-Length`` is answered 413 before a byte is read; a chunked
  body is counted while it streams in and answered 413 as soon as it passes the limit, so a 1 GB upload costs the
  server at most the limit plus the transport's buffers. The connection is then closed (the rest of the body
  is never read).
- **Method names.** Only the methods of the route table reach the app; any other name is answered 501 (a method
  the table has on another path gets Starlette's 405). Metrics label unknown methods ``other``, so random method
  names cannot grow ``/metrics``.
- **Cost.** Tagging scores every label against every segment: a request may ask for at most `MAX_TAG_SCORES`
  (labels x segments); a search may re-rank at most `MAX_RERANK` candidates exactly (first-stage-only searches
  may ask for up to `search.MAX_CANDIDATES`). Over the limit: 413 with one line that says how to ask for less.
  How the model thread is shared between requests is `modelqueue`'s business.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import RequestTooLargeError
from ..index import DEFAULT_CANDIDATES

MAX_BODY_BYTES = 4 << 20
MAX_TAG_SCORES = 1_000_000
MAX_RERANK = 5_000
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"})


def route_methods(routes: Iterable[Any]) -> set[str]:
    """Every method of a route table, through included routers and mounts (a mount serves GET and HEAD)."""
    found: set[str] = set()
    for route in routes:
        found |= set(getattr(route, "methods", None) or ())
        nested = getattr(getattr(route, "original_router", None), "routes", None) or getattr(route, "routes", None)
        if nested:
            found |= route_methods(nested)
        elif not getattr(route, "methods", None) and hasattr(route, "app"):
            found |= {"GET", "HEAD"}
    return found


def metric_method(method: str) -> str:
    """The method as a metrics label: a standard name, else ``other`` (bounded label values)."""
    return method if method in KNOWN_METHODS else "other"


def check_tag_cost(labels: int, segments: int) -> None:
    """Refuse (413) a tagging request that would compute more than `MAX_TAG_SCORES` label scores."""
    if labels * segments > MAX_TAG_SCORES:
        raise RequestTooLargeError(
            f"Tagging request too large: {labels} labels x {segments} segments = {labels * segments:,} scores "
            f"(at most {MAX_TAG_SCORES:,} per request)",
            hint="Send fewer labels, tag one video, or page through the index with a smaller 'limit'.",
        )


def check_search_cost(top_k: int, candidates: int | None, rerank: bool, rows: int) -> None:
    """Refuse (413) a search that would re-rank more than `MAX_RERANK` candidates exactly.

    `rows` bounds what can be re-ranked (the index's stored rows), so a large ``candidates`` over a small index
    costs nothing extra and is allowed.
    """
    wanted = max(top_k, candidates or DEFAULT_CANDIDATES)
    if rerank and min(wanted, rows) > MAX_RERANK:
        raise RequestTooLargeError(
            f"Search request too large: {min(wanted, rows):,} candidates to re-rank exactly (at most {MAX_RERANK:,})",
            hint="Ask for fewer candidates or results, or pass rerank=false for a first-stage-only search.",
        )


def _json_error(status: int, message: str) -> tuple[dict[str, Any], dict[str, Any]]:
    body = ('{"error": "' + message.replace('"', "'") + '"}').encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class _BodyTooLarge(Exception):
    pass


class RequestLimitsMiddleware:
    """Pure ASGI middleware enforcing the body limit and the method table (see the module docstring)."""

    def __init__(self, app: Any, methods: Iterable[str], max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.methods = frozenset(methods)
        self.max_body = max_body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("method") not in self.methods:
            start, body = _json_error(501, "Method not implemented")
            start["headers"].append((b"allow", ", ".join(sorted(self.methods)).encode()))
            await send(start)
            await send(body)
            return
        length = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
        if length is not None and (not length.strip().isdigit() or int(length) > self.max_body):
            await self._refuse(send)
            return
        state = {"received": 0, "started": False, "refused": False}

        async def limited_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body:
                    if not state["started"]:
                        state["refused"] = True
                        await self._refuse(send)
                    raise _BodyTooLarge
            return message

        async def tracked_send(message: dict[str, Any]) -> None:
            if state["refused"]:
                return  # the 413 is already out; whatever the app answers to the aborted body is dropped
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except Exception:
            if not state["refused"]:
                raise

    async def _refuse(self, send: Any) -> None:
        start, body = _json_error(413, f"Request body too large (at most {self.max_body:,} bytes)")
        await send(start)
        await send(body)
