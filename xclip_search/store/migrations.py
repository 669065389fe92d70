"""Catalog schema versions and the ordered steps between them, the same on SQLite and PostgreSQL.

The version lives in the ``meta`` table (``schema_version``). A new catalog is created at the latest version;
an older one is brought forward one step at a time, all in one transaction taken under a lock (SQLite's
``BEGIN IMMEDIATE``; on PostgreSQL a transaction-level advisory lock), so two processes opening an old catalog
at once migrate it once. Both backends run DDL inside transactions, so a failed step leaves the old version.
A catalog newer than this code is refused: its rows may mean something this code does not know.

Adding a step: bump `LATEST`, append a function to `STEPS` that takes the connection and the metadata, and
make it tolerate a catalog where the change is already there (releases before versioning added columns ad hoc).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from sqlalchemy import Engine, MetaData, inspect, select, text, update
from sqlalchemy.engine import Connection

from ..errors import CatalogError
from . import fulltext

LATEST = 6
VERSION_KEY = "schema_version"


def _v2_file_identity(conn: Connection, metadata: MetaData) -> None:
    """Device and inode columns: a renamed or moved file is recognised without reading it."""
    present = {c["name"] for c in inspect(conn).get_columns("videos")}
    for name in ("dev", "inode"):
        if name not in present:
            conn.exec_driver_sql(f"ALTER TABLE videos ADD COLUMN {name} BIGINT")


def _v3_tags(conn: Connection, metadata: MetaData) -> None:
    """Saved labels (``tag --save``), what ``search --tag`` filters on."""
    metadata.tables["tags"].create(conn, checkfirst=True)


def _v4_segment_shots(conn: Connection, metadata: MetaData) -> None:
    """The shot of each segment (shot-aligned segmentation): merging never widens a hit across a cut."""
    if "shot" not in {c["name"] for c in inspect(conn).get_columns("segments")}:
        conn.exec_driver_sql("ALTER TABLE segments ADD COLUMN shot INTEGER")


def _v5_cues(conn: Connection, metadata: MetaData) -> None:
    """Timed text (subtitles, speech) and its full-text index: search by what is said."""
    metadata.tables["cues"].create(conn, checkfirst=True)
    metadata.tables["cue_tracks"].create(conn, checkfirst=True)
    fulltext.create(conn)


def _v6_concepts(conn: Connection, metadata: MetaData) -> None:
    """Concepts learned from examples (``learn``): labels scored by a small model over the stored ``v``."""
    metadata.tables["concepts"].create(conn, checkfirst=True)


# STEPS[i] takes a catalog from version i + 1 to version i + 2.
STEPS: list[Callable[[Connection, MetaData], None]] = [
    _v2_file_identity,
    _v3_tags,
    _v4_segment_shots,
    _v5_cues,
    _v6_concepts,
]
assert len(STEPS) == LATEST - 1


def read_version(conn: Connection, metadata: MetaData) -> int | None:
    """The catalog's schema version, or None when the database holds no catalog yet."""
    if not inspect(conn).has_table("meta"):
        return None
    meta = metadata.tables["meta"]
    value = conn.execute(select(meta.c.value).where(meta.c.key == VERSION_KEY)).scalar_one_or_none()
    return None if value is None else int(value)


@contextlib.contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """One transaction that no other migrating process runs concurrently."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('xclip-search:migrate:' || current_schema()))"))
            yield conn
        return
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def migrate(engine: Engine, metadata: MetaData, *, create: bool, where: str) -> int:
    """Bring the catalog at `engine` to `LATEST` (creating it when `create`); returns the version found."""
    with engine.connect() as conn:
        found = read_version(conn, metadata)
    if found == LATEST:
        return found
    _refuse_newer(found, where)
    with _locked(engine) as conn:
        found = read_version(conn, metadata)  # another process may have migrated while we waited
        _refuse_newer(found, where)
        if found is None:
            if not create:
                raise CatalogError(
                    f"{where} holds no xclip-search catalog",
                    hint="Check the catalog URL (XCLIP_SEARCH_CATALOG, catalog.json), or build the index first.",
                )
            metadata.create_all(conn)
            fulltext.create(conn)  # backend-specific DDL that the metadata cannot describe
            meta, counter = metadata.tables["meta"], metadata.tables["id_counter"]
            conn.execute(meta.insert().values(key=VERSION_KEY, value=str(LATEST)))
            conn.execute(counter.insert().values(name="segments", next=1))
            return 0
        for version in range(found, LATEST):
            STEPS[version - 1](conn, metadata)
        meta = metadata.tables["meta"]
        conn.execute(update(meta).where(meta.c.key == VERSION_KEY).values(value=str(LATEST)))
        return found


def _refuse_newer(found: int | None, where: str) -> None:
    if found is not None and found > LATEST:
        raise CatalogError(
            f"The catalog at {where} has schema version {found}; this xclip-search knows versions up to {LATEST}",
            hint="Upgrade xclip-search on this machine (every indexer and server sharing a catalog must be as new).",
        )
