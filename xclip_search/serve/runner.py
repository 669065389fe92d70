"""Running the app with uvicorn: in the foreground (the command line) or in a thread (tests, scripts).

The socket is bound here, before uvicorn starts, so ``--port 0`` gets a free port whose real number can be
printed, and a port already in use is a one-line error instead of a uvicorn traceback.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI

from ..errors import InvalidArgumentError
from .app import ServeSettings, create_app


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); IPv6 when `host` is an IPv6 address."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # accepted sockets inherit it. Without it, a keep-alive client waits for a delayed ACK (~40 ms) on every
    # response written in two parts (headers, body).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise InvalidArgumentError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="Choose another --port (0 picks a free one) or stop the program that uses it.",
        ) from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_for(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def _server(app: Any, *, log_level: str = "warning") -> Any:
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


def run_server(settings: ServeSettings, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted (Ctrl+C); `on_ready` receives the URL once the socket is bound."""
    app = create_app(settings)
    sock = bind_socket(settings.host, settings.port)
    try:
        server = _server(app)
        if on_ready is not None:
            on_ready(url_for(sock))
        server.run(sockets=[sock])
    finally:
        sock.close()


@contextlib.contextmanager
def serve_in_thread(settings: ServeSettings, *, timeout: float = 30.0, app: FastAPI | None = None) -> Iterator[str]:
    """Run the server in a background thread for the duration of the block; yields its base URL. `app`: one
    already made from `settings` (a caller that needs its state)."""
    app = app or create_app(settings)
    sock = bind_socket(settings.host, settings.port)
    server = _server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="xclip-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield url_for(sock)
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
