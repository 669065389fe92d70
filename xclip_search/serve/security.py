"""Who may do what: a bearer token for write operations, and guards for a server meant for one machine.

- Reads (search, tag without saving, media) need no token. Writes (saving tags, re-indexing) need the token
  when one is configured; without one they are allowed only while the server listens on loopback.
- While listening on loopback, requests must name a loopback Host (a web page on another site cannot reach
  this server through DNS rebinding), and a request carrying a foreign ``Origin`` may not write (no CSRF).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AccessPolicy:
    token: str | None = None
    loopback: bool = True
    extra_hosts: tuple[str, ...] = field(default_factory=tuple)

    def host_allowed(self, host_header: str | None) -> bool:
        """A Host header is acceptable: any when serving beyond loopback, else a loopback name."""
        if not self.loopback:
            return True
        if not host_header:
            return False
        host = urlsplit(f"//{host_header}").hostname or ""
        return is_loopback(host) or host in self.extra_hosts


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == (request.headers.get("host") or "").lower()


def require_writer(request: Request) -> None:
    """FastAPI dependency for write routes (see the module docstring)."""
    policy: AccessPolicy = request.app.state.policy
    if not _same_origin(request):
        raise HTTPException(403, "Cross-origin write requests are refused")
    if policy.token is None:
        if not policy.loopback:
            raise HTTPException(
                403,
                "Write operations are disabled: the server listens beyond localhost without a token "
                "(start it with --token or $XCLIP_SEARCH_TOKEN)",
            )
        return
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), policy.token.encode()):
        raise HTTPException(
            401, "A valid bearer token is required for this operation", headers={"WWW-Authenticate": "Bearer"}
        )


class HostCheckMiddleware:
    """Refuses (421) requests whose Host is not this loopback server's (pure ASGI)."""

    def __init__(self, app: Any, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), None)
            if not self.policy.host_allowed(host):
                body = b'{"error": "Unknown Host header; this server answers to localhost only"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 421,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
