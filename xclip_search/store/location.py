"""Where an index's catalog lives: ``catalog.sqlite`` in the index directory, or a database named by a URL.

A shared deployment keeps the catalog on PostgreSQL (``--catalog postgresql://user@host/db``) and the vector
files and manifest in the index directory on a shared file system. The directory remembers the URL in
``catalog.json`` *without* its password, so ``search``, ``info``, ``serve`` and ``Index.open(dir)`` find the
catalog by the directory alone; the password comes from libpq's usual places (``PGPASSWORD``, ``~/.pgpass``)
or from the URL given again. ``XCLIP_SEARCH_CATALOG`` overrides the recorded URL (another host name for the
same server, a password); the catalog's ``index_id`` must still match the directory's, so a URL that names
another index's catalog is refused instead of being read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ..errors import IndexCorruptError, InvalidArgumentError
from .fsio import atomic_write_bytes

CATALOG_NAME = "catalog.sqlite"
LOCATION_FILE = "catalog.json"
CATALOG_ENV = "XCLIP_SEARCH_CATALOG"
_BACKENDS = ("sqlite", "postgresql")
_HINT = "Use sqlite:///PATH or postgresql://USER@HOST[:PORT]/DATABASE (pip install 'xclip-search[postgres]')."


@dataclass(frozen=True)
class CatalogLocation:
    """A resolved catalog URL (with the password when one was given) and the index id the directory records."""

    url: str
    index_id: str | None = None

    @property
    def backend(self) -> str:
        return make_url(self.url).get_backend_name()

    @property
    def shared(self) -> bool:
        """Whether several machines' writers may use this catalog at once (PostgreSQL)."""
        return self.backend != "sqlite"

    @property
    def display(self) -> str:
        """The URL without its password: what is recorded and printed."""
        return without_password(self.url)


def normalize_url(url: str) -> str:
    """Check a catalog URL and pin the PostgreSQL driver to psycopg 3 (``postgresql://`` -> ``+psycopg``)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidArgumentError(f"Invalid catalog URL ({without_password(url)})", hint=_HINT) from exc
    backend = parsed.get_backend_name()
    if backend not in _BACKENDS:
        raise InvalidArgumentError(f"Unsupported catalog backend ({backend})", hint=_HINT)
    if backend == "postgresql":
        if parsed.get_driver_name() not in ("psycopg", "postgresql", ""):
            raise InvalidArgumentError(f"Unsupported PostgreSQL driver ({parsed.drivername})", hint=_HINT)
        parsed = parsed.set(drivername="postgresql+psycopg")
        if not parsed.database:
            raise InvalidArgumentError(f"The catalog URL {without_password(url)} names no database", hint=_HINT)
    return parsed.render_as_string(hide_password=False)


def without_password(url: str) -> str:
    try:
        parsed: URL = make_url(url)
    except ArgumentError:
        return "<unparseable URL>"
    # URL.set(password=None) keeps the password (None means "unchanged" there): build the URL again without it.
    bare = URL.create(parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database, parsed.query)
    return bare.render_as_string(hide_password=False)


def default_url(index_dir: Path) -> str:
    return f"sqlite:///{Path(index_dir) / CATALOG_NAME}"


def read_recorded(index_dir: Path) -> dict[str, str] | None:
    """The directory's ``catalog.json`` (url without password, index_id), or None for a local SQLite catalog."""
    path = Path(index_dir) / LOCATION_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        return {"url": str(doc["url"]), "index_id": str(doc["index_id"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexCorruptError(f"Cannot read {path}: {exc}") from exc


def record(index_dir: Path, url: str, index_id: str) -> None:
    """Remember a non-default catalog (password left out) next to the manifest."""
    doc = {"url": without_password(url), "index_id": index_id}
    atomic_write_bytes(Path(index_dir) / LOCATION_FILE, (json.dumps(doc, indent=1) + "\n").encode())


def resolve(index_dir: Path, url: str | None = None) -> CatalogLocation:
    """The catalog of `index_dir`: `url` if given, else ``$XCLIP_SEARCH_CATALOG``, else the recorded one, else
    ``catalog.sqlite`` in the directory. Without a password in the URL, libpq reads ``PGPASSWORD`` or
    ``~/.pgpass`` itself."""
    recorded = read_recorded(index_dir)
    index_id = recorded["index_id"] if recorded else None
    chosen = url or os.environ.get(CATALOG_ENV) or (recorded["url"] if recorded else None)
    if not chosen:
        return CatalogLocation(default_url(index_dir), None)
    return CatalogLocation(normalize_url(chosen), index_id)


def is_default(location: CatalogLocation, index_dir: Path) -> bool:
    return location.url == normalize_url(default_url(index_dir))
