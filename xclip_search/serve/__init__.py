"""``xclip-search serve``: an HTTP API and a web page to search, watch and tag an index.

    from xclip_search.serve import ServeSettings, create_app
    app = create_app(ServeSettings(index_dir=Path("xclip-index")))   # any ASGI server can run it

Needs the ``serve`` extra (FastAPI, uvicorn, prometheus_client): ``pip install 'xclip-search[serve]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import ServeSettings, create_app
    from .runner import run_server, serve_in_thread

_LAZY = {
    "ServeSettings": ".app",
    "create_app": ".app",
    "run_server": ".runner",
    "serve_in_thread": ".runner",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'xclip_search.serve' has no attribute {name!r}")


__all__ = ["ServeSettings", "create_app", "run_server", "serve_in_thread"]
