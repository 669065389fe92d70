"""The catalog: videos, segments, shards, generations and runs in SQL (SQLite by default, PostgreSQL shared).

`Catalog` is the one way into the catalog tables: opening and migrating the database, the commit lock, and the
reads (`catalog_reads`) and writes (`catalog_writes`) by role; the tables are in `schema` and the typed
records in `records`. Those names stay importable from here for the modules that used them before the split.

The schema is the same on both backends (see `migrations`); where the catalog lives is `location`'s business.
On PostgreSQL several writers share one catalog, so each commit runs under `commit_lock` (an advisory lock).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from ..errors import CatalogError, IndexCorruptError
from . import migrations
from .catalog_concepts import CatalogConcepts, ConceptRow
from .catalog_cues import CatalogCues
from .catalog_reads import CatalogReads
from .catalog_writes import CatalogWrites
from .dbguard import guard_sqlite
from .location import CATALOG_NAME, CatalogLocation, is_default, resolve
from .records import (
    BatchEntry,
    FileUpdate,
    RunRoots,
    SegmentRecord,
    SegmentRow,
    TagRow,
    VideoListing,
    VideoRecord,
    VideoRow,
    signed64,
)
from .schema import (
    FAILED,
    INDEXED,
    REMOVED,
    SCHEMA_VERSION,
    SKIPPED,
    generations,
    id_counter,
    live_at,
    meta_table,
    metadata,
    runs,
    segments,
    shards,
    tags,
    videos,
)


class Catalog(CatalogReads, CatalogWrites, CatalogCues, CatalogConcepts):
    """A handle on the catalog database (one SQLAlchemy engine per process)."""

    def __init__(self, engine: Engine, location: CatalogLocation | None = None) -> None:
        self.engine = engine
        self.location = location or CatalogLocation(engine.url.render_as_string(hide_password=False))

    @classmethod
    def open(cls, index_dir: Path, *, url: str | None = None, create: bool = False) -> Catalog:
        """Open the catalog of `index_dir` (see `location.resolve`), migrating it, creating it if asked."""
        location = resolve(Path(index_dir), url)
        if is_default(location, Path(index_dir)) and not create and not (Path(index_dir) / CATALOG_NAME).is_file():
            raise IndexCorruptError(f"{index_dir} has a manifest but no {CATALOG_NAME}")
        catalog = cls.connect(location, create=create)
        if location.index_id is not None:
            found = catalog.get_meta("index_id")
            if found is not None and found != location.index_id:
                catalog.close()
                raise CatalogError(
                    f"The catalog at {location.display} belongs to another index than {index_dir}",
                    hint="Point XCLIP_SEARCH_CATALOG at the database this index was built with.",
                )
        return catalog

    @classmethod
    def connect(cls, location: CatalogLocation, *, create: bool = False) -> Catalog:
        """Open the database at `location` and bring its schema to the latest version."""
        shared = location.shared
        engine = create_engine(location.url, pool_pre_ping=shared)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
            guard_sqlite(engine)  # a damaged file: one line naming it and the recovery
        try:
            migrations.migrate(engine, metadata, create=create, where=location.display)
        except OperationalError as exc:
            engine.dispose()
            first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
            raise CatalogError(
                f"Cannot open the catalog at {location.display}: {first}",
                hint="Check that the database server is running and the password is set (PGPASSWORD, ~/.pgpass)."
                if shared
                else None,
            ) from exc
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, location)

    @property
    def shared(self) -> bool:
        """Whether other machines may write to this catalog concurrently (PostgreSQL)."""
        return self.engine.dialect.name != "sqlite"

    @contextlib.contextmanager
    def commit_lock(self) -> Iterator[None]:
        """Serialise commits of writers sharing this catalog: a PostgreSQL session advisory lock.

        Held on its own connection from the generation number's choice to the manifest's publication, so
        generations, segment rows and manifests of concurrent writers never interleave. A writer that dies
        loses its connection and with it the lock. On SQLite the writer's ``flock`` on the index directory
        already excludes every other writer, so this is a no-op.
        """
        if not self.shared:
            yield
            return
        key = text("hashtext('xclip-search:commit:' || current_schema())")
        with self.engine.connect() as conn:
            conn.execute(select(func.pg_advisory_lock(key)))
            conn.commit()
            try:
                yield
            finally:
                conn.execute(select(func.pg_advisory_unlock(key)))
                conn.commit()

    def close(self) -> None:
        self.engine.dispose()

    def size_bytes(self) -> int:
        """Bytes the catalog's tables and indexes take in a PostgreSQL database (0 elsewhere; see `Index.info`)."""
        if not self.shared:
            return 0
        query = text(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'"
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed batch must survive power loss, because the manifest published after it points at it.
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
    finally:
        cur.close()


__all__ = [
    "CATALOG_NAME",
    "FAILED",
    "INDEXED",
    "REMOVED",
    "SCHEMA_VERSION",
    "SKIPPED",
    "BatchEntry",
    "Catalog",
    "ConceptRow",
    "FileUpdate",
    "RunRoots",
    "SQLAlchemyError",
    "SegmentRecord",
    "SegmentRow",
    "TagRow",
    "VideoListing",
    "VideoRecord",
    "VideoRow",
    "generations",
    "id_counter",
    "live_at",
    "meta_table",
    "metadata",
    "runs",
    "segments",
    "shards",
    "signed64",
    "tags",
    "videos",
]
