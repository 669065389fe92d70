"""The catalog: videos, segments, shards, generations and runs in SQL (SQLite by default, PostgreSQL shared).

Rows are versioned by generation instead of updated in place: a segment carries the generation that added it
and, once replaced or pruned, the generation that removed it. A reader pinned to the manifest's generation
``g`` sees ``gen_added <= g < gen_removed`` and so never observes a half-published batch, even while a writer
commits the next one. Every value reaches SQL as a bound parameter.

The schema is the same on both backends (see `migrations`); where the catalog lives is `location`'s business.
On PostgreSQL several writers share one catalog, so each commit runs under `commit_lock` (an advisory lock).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from ..errors import CatalogError, IndexCorruptError
from . import migrations
from .dbguard import guard_sqlite
from .location import CATALOG_NAME, CatalogLocation, is_default, resolve
from .manifest import ShardInfo, now_iso

SCHEMA_VERSION = migrations.LATEST

# 64-bit where values need it (nanosecond times, inodes, sizes, segment ids): BIGINT on PostgreSQL, while on
# SQLite it stays INTEGER (already 64-bit there, and the only type an autoincrementing rowid alias accepts).
Big = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

meta_table = Table("meta", metadata, Column("key", String(64), primary_key=True), Column("value", Text))

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", String(40), nullable=False),
    Column("finished_at", String(40)),
    Column("status", String(16), nullable=False),
    Column("roots", Text),
    Column("counts", Text),
    sqlite_autoincrement=True,
)

videos = Table(
    "videos",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("path", Text, nullable=False, unique=True),
    Column("size", Big),
    Column("mtime_ns", Big),
    Column("content_hash", Text),  # "<scheme>:<sha256>": longer than a bare digest
    Column("duration_s", Float),
    Column("fps", Float),
    Column("num_frames", Integer),
    Column("width", Integer),
    Column("height", Integer),
    Column("codec", Text),
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("warnings", Integer, nullable=False, default=0),
    Column("indexed_at", String(40)),
    Column("updated_at", String(40), nullable=False),
    Column("run_id", Integer),
    Column("generation", Integer, nullable=False),
    # Device and inode (as signed 64-bit) recognise a renamed or moved file without reading it.
    Column("dev", Big),
    Column("inode", Big),
    sqlite_autoincrement=True,
)

segments = Table(
    "segments",
    metadata,
    Column("id", Big, primary_key=True, autoincrement=False),
    Column("video_id", Integer, ForeignKey("videos.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("start_s", Float, nullable=False),
    Column("end_s", Float, nullable=False),
    Column("frame_start", Integer, nullable=False),
    Column("frame_end", Integer, nullable=False),
    Column("shard", String(64), nullable=False),
    Column("row", Integer, nullable=False),
    Column("gen_added", Integer, nullable=False),
    Column("gen_removed", Integer),
    Index("ix_segments_video", "video_id"),
    Index("ix_segments_live", "gen_removed", "gen_added"),
)

shards = Table(
    "shards",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("generation", Integer, nullable=False),
    Column("z_dtype", String(16), nullable=False),
    Column("checksums", Text, nullable=False),
    Column("created_at", String(40), nullable=False),
)

generations = Table(
    "generations",
    metadata,
    Column("gen", Integer, primary_key=True, autoincrement=False),
    Column("created_at", String(40), nullable=False),
    Column("run_id", Integer),
)

# Segment ids are reserved before their vectors are written (the ids go into the shard files and the ANN), so
# they come from a counter rather than from the INSERT; ids lost to a crash are simply never used.
id_counter = Table("id_counter", metadata, Column("name", String(32), primary_key=True), Column("next", Big))

# Labels saved by `tag --index DIR --save`: what search filters on with --tag. A tag belongs to a segment; saving
# a vocabulary again replaces that vocabulary's labels on the segments it tagged. Probabilities are relative to
# the vocabulary they were computed with (a softmax over it).
tags = Table(
    "tags",
    metadata,
    Column("segment_id", Big, ForeignKey("segments.id"), primary_key=True),
    Column("label", Text, primary_key=True),
    Column("prob", Float, nullable=False),
    Column("score", Float, nullable=False),
    Column("tagged_at", String(40), nullable=False),
    Index("ix_tags_label", "label", "prob"),
)

# Statuses a video row can hold; what a run did to each file (unchanged, moved, ...) is in the run's report.
INDEXED, FAILED, SKIPPED, REMOVED = "indexed", "failed", "skipped", "removed"


@dataclass
class VideoRecord:
    """What the indexer learned about one file, ready to be written as a `videos` row."""

    path: str
    size: int
    mtime_ns: int
    status: str
    reason: str | None = None
    content_hash: str | None = None
    duration_s: float | None = None
    fps: float | None = None
    num_frames: int | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    warnings: int = 0
    dev: int | None = None
    inode: int | None = None


@dataclass(frozen=True)
class FileUpdate:
    """A video whose file moved (`old_path` -> `path`) or whose stat fields changed with the same content.

    The row keeps its id, segments and vectors; only where the file is and how it is recognised change.
    """

    old_path: str
    path: str
    size: int
    mtime_ns: int
    dev: int | None
    inode: int | None
    content_hash: str | None


def signed64(value: int | None) -> int | None:
    """Store an unsigned 64-bit stat field (inode, device) in a signed SQL integer."""
    if value is None:
        return None
    return value - (1 << 64) if value >= (1 << 63) else value


@dataclass
class SegmentRecord:
    """One time window of a video, with the id its vectors carry and its place in a shard."""

    seq: int
    start_s: float
    end_s: float
    frame_start: int
    frame_end: int
    id: int = -1
    row: int = -1


@dataclass
class BatchEntry:
    video: VideoRecord
    segments: list[SegmentRecord] = field(default_factory=list)


def live_at(generation: int) -> Any:
    """SQL condition: the segment is visible in `generation`."""
    return and_(
        segments.c.gen_added <= generation,
        or_(segments.c.gen_removed.is_(None), segments.c.gen_removed > generation),
    )


class _QueryMixin:
    """Reader-side queries of the query engine: filters, tags, neighbours and export (see xclip_search.search)."""

    engine: Engine

    def has_tags_table(self) -> bool:
        return bool(inspect(self.engine).has_table("tags"))

    def has_tags(self) -> bool:
        """Whether any tag was saved (indexes built before the tags table existed have none)."""
        if not self.has_tags_table():
            return False
        with self.engine.connect() as conn:
            return conn.execute(select(tags.c.segment_id).limit(1)).first() is not None

    def ensure_tags_table(self) -> None:
        """Create the tags table in an index built before it existed."""
        tags.create(self.engine, checkfirst=True)

    def save_tags(
        self, vocabulary: Sequence[str], segment_ids: Sequence[int], rows: Sequence[tuple[int, str, float, float]]
    ) -> int:
        """Replace the `vocabulary` labels of `segment_ids` with `rows` (segment_id, label, prob, score)."""
        self.ensure_tags_table()
        now = now_iso()
        vocab = list(vocabulary)
        with self.engine.begin() as conn:
            for i in range(0, len(segment_ids), 500):
                chunk = [int(x) for x in segment_ids[i : i + 500]]
                for j in range(0, len(vocab), 400):
                    conn.execute(
                        delete(tags).where(
                            tags.c.segment_id.in_(bindparam("ids", expanding=True)),
                            tags.c.label.in_(bindparam("labels", expanding=True)),
                        ),
                        {"ids": chunk, "labels": vocab[j : j + 400]},
                    )
            if rows:
                conn.execute(
                    tags.insert(),
                    [
                        {"segment_id": int(sid), "label": label, "prob": float(p), "score": float(sc), "tagged_at": now}
                        for sid, label, p, sc in rows
                    ],
                )
        return len(rows)

    def tags_of(self, segment_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
        """Saved tags of the given segments, most probable first."""
        out: dict[int, list[dict[str, Any]]] = {}
        if not segment_ids or not self.has_tags_table():
            return out
        query = (
            select(tags.c.segment_id, tags.c.label, tags.c.prob, tags.c.score)
            .where(tags.c.segment_id.in_(bindparam("ids", expanding=True)))
            .order_by(tags.c.segment_id, tags.c.prob.desc())
        )
        with self.engine.connect() as conn:
            for i in range(0, len(segment_ids), 900):
                chunk = [int(x) for x in segment_ids[i : i + 900]]
                for r in conn.execute(query, {"ids": chunk}).mappings():
                    out.setdefault(int(r["segment_id"]), []).append(
                        {"label": r["label"], "prob": float(r["prob"]), "score": float(r["score"])}
                    )
        return out

    def segment_ids_where(self, generation: int, condition: ColumnElement[bool] | None) -> np.ndarray:
        """Sorted ids of the segments visible in `generation` that satisfy `condition` (over segments ⋈ videos).

        `condition` is built by `xclip_search.filters` from whitelisted columns and bound parameters only.
        """
        query = select(segments.c.id).select_from(segments.join(videos, videos.c.id == segments.c.video_id))
        query = query.where(live_at(generation))
        if condition is not None:
            query = query.where(condition)
        with self.engine.connect() as conn:
            return np.fromiter(conn.execute(query.order_by(segments.c.id)).scalars(), dtype=np.int64)

    def video_segments(self, video_ids: Sequence[int], generation: int) -> dict[int, list[dict[str, Any]]]:
        """Every segment (id, seq, start_s, end_s) of the given videos visible in `generation`, in time order."""
        out: dict[int, list[dict[str, Any]]] = {}
        if not video_ids:
            return out
        query = (
            select(segments.c.id, segments.c.video_id, segments.c.seq, segments.c.start_s, segments.c.end_s)
            .where(segments.c.video_id.in_(bindparam("vids", expanding=True)), live_at(generation))
            .order_by(segments.c.video_id, segments.c.seq)
        )
        keys = [str(c.key) for c in query.selected_columns]
        with self.engine.connect() as conn:
            for row in conn.execute(query, {"vids": [int(v) for v in video_ids]}).all():
                r = dict(zip(keys, row, strict=True))
                out.setdefault(int(r["video_id"]), []).append(r)
        return out

    def iter_segment_rows(self, generation: int, ids: np.ndarray | None = None, batch: int = 4096) -> Any:
        """Live segments with their video's path, by id order, in batches (lists of dicts); `ids` restricts."""
        base = select(
            segments.c.id,
            segments.c.video_id,
            segments.c.seq,
            segments.c.start_s,
            segments.c.end_s,
            segments.c.frame_start,
            segments.c.frame_end,
            videos.c.path,
        ).join(videos, videos.c.id == segments.c.video_id)
        if ids is not None:
            for i in range(0, len(ids), 900):
                chunk = [int(x) for x in ids[i : i + 900]]
                query = base.where(segments.c.id.in_(bindparam("ids", expanding=True))).order_by(segments.c.id)
                with self.engine.connect() as conn:
                    rows = [dict(r) for r in conn.execute(query, {"ids": chunk}).mappings()]
                if rows:
                    yield rows
            return
        last = -1
        while True:
            query = base.where(live_at(generation), segments.c.id > last).order_by(segments.c.id).limit(batch)
            with self.engine.connect() as conn:
                rows = [dict(r) for r in conn.execute(query).mappings()]
            if not rows:
                return
            last = int(rows[-1]["id"])
            yield rows

    def video_table(self, video_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Video rows (every column), by id; all of them when `video_ids` is None."""
        query = select(videos).order_by(videos.c.id)
        with self.engine.connect() as conn:
            if video_ids is None:
                return [dict(r) for r in conn.execute(query).mappings()]
            out: list[dict[str, Any]] = []
            ids = sorted({int(v) for v in video_ids})
            for i in range(0, len(ids), 900):
                q = query.where(videos.c.id.in_(bindparam("ids", expanding=True)))
                out.extend(dict(r) for r in conn.execute(q, {"ids": ids[i : i + 900]}).mappings())
            return out


class Catalog(_QueryMixin):
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
                    hint="Point XCLIP_SEARCH_CATALOG (or --catalog) at the database this index was built with.",
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

    # -- writer side -------------------------------------------------------------------------------------

    def reserve_segment_ids(self, count: int) -> int:
        """Reserve `count` consecutive segment ids; returns the first.

        The counter row is locked (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite has one writer), so two
        writers sharing a catalog never get overlapping ranges.
        """
        with self.engine.begin() as conn:
            query = select(id_counter.c.next).where(id_counter.c.name == "segments").with_for_update()
            start = conn.execute(query).scalar_one()
            conn.execute(update(id_counter).where(id_counter.c.name == "segments").values(next=start + count))
        return int(start)

    def start_run(self, roots: Sequence[str]) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                runs.insert().values(started_at=now_iso(), status="running", roots=json.dumps(list(roots)))
            )
            return _inserted_id(result)

    def finish_run(self, run_id: int, status: str, counts: dict[str, int]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(finished_at=now_iso(), status=status, counts=json.dumps(counts))
            )

    def latest_generation(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(generations.c.gen), 0))).scalar_one())

    def commit_batch(
        self,
        generation: int,
        run_id: int | None,
        entries: Sequence[BatchEntry],
        shard: ShardInfo | None,
        removed_paths: Iterable[str] = (),
        updates: Sequence[FileUpdate] = (),
    ) -> None:
        """Record one batch as `generation`, atomically: new shard, video rows, their segments, removals,
        and moved or re-stamped files."""
        now = now_iso()
        with self.engine.begin() as conn:
            conn.execute(generations.insert().values(gen=generation, created_at=now, run_id=run_id))
            for u in updates:
                if (
                    u.path != u.old_path
                    and conn.execute(
                        select(videos.c.id).where(videos.c.path == u.path, videos.c.status != REMOVED)
                    ).first()
                ):
                    continue  # another writer sharing the catalog recorded the new path first
                conn.execute(
                    update(videos)
                    .where(videos.c.path == u.old_path)
                    .values(
                        path=u.path,
                        size=u.size,
                        mtime_ns=u.mtime_ns,
                        dev=signed64(u.dev),
                        inode=signed64(u.inode),
                        content_hash=u.content_hash,
                        updated_at=now,
                        run_id=run_id,
                    )
                )
            if shard is not None:
                conn.execute(
                    shards.insert().values(
                        name=shard.name,
                        count=shard.count,
                        generation=generation,
                        z_dtype=shard.z_dtype,
                        checksums=json.dumps(shard.sha256, sort_keys=True),
                        created_at=now,
                    )
                )
            for entry in entries:
                video_id = self._upsert_video(conn, entry.video, generation, run_id, now)
                self._retire_segments(conn, [video_id], generation)
                if entry.segments:
                    if shard is None:
                        raise ValueError("segments need a shard")
                    conn.execute(
                        segments.insert(),
                        [
                            {
                                "id": s.id,
                                "video_id": video_id,
                                "seq": s.seq,
                                "start_s": s.start_s,
                                "end_s": s.end_s,
                                "frame_start": s.frame_start,
                                "frame_end": s.frame_end,
                                "shard": shard.name,
                                "row": s.row,
                                "gen_added": generation,
                                "gen_removed": None,
                            }
                            for s in entry.segments
                        ],
                    )
            removed = list(removed_paths)
            if removed:
                ids = [
                    r[0]
                    for r in conn.execute(
                        select(videos.c.id).where(videos.c.path.in_(bindparam("p", expanding=True))),
                        {"p": removed},
                    )
                ]
                self._retire_segments(conn, ids, generation)
                conn.execute(
                    update(videos)
                    .where(videos.c.id.in_(bindparam("ids", expanding=True)))
                    .values(status=REMOVED, updated_at=now, generation=generation),
                    {"ids": ids},
                )

    def already_indexed(self, records: Sequence[VideoRecord]) -> set[str]:
        """Paths among `records` that the catalog already holds as indexed, with the same stamps.

        A writer re-checks its batch with this under `commit_lock`: when two runs sharing a catalog both
        picked up a file, the second to commit finds the first's row and drops its copy instead of replacing
        it (a sequential run would have called the file unchanged). The test is the one `indexer.changes`
        uses: same size and mtime, same device and inode when recorded, same content hash when both know one.
        """
        wanted = {r.path: r for r in records}
        found: set[str] = set()
        for path, row in self.videos_by_path(list(wanted)).items():
            rec = wanted[path]
            if row["status"] != INDEXED or (row["size"], row["mtime_ns"]) != (rec.size, rec.mtime_ns):
                continue
            known = row.get("inode") is not None and rec.inode is not None
            if known and (row.get("dev"), row["inode"]) != (signed64(rec.dev), signed64(rec.inode)):
                continue
            if row.get("content_hash") and rec.content_hash and row["content_hash"] != rec.content_hash:
                continue
            found.add(path)
        return found

    @staticmethod
    def _upsert_video(conn: Connection, rec: VideoRecord, generation: int, run_id: int | None, now: str) -> int:
        values: dict[str, Any] = {
            "size": rec.size,
            "mtime_ns": rec.mtime_ns,
            "content_hash": rec.content_hash,
            "duration_s": rec.duration_s,
            "fps": rec.fps,
            "num_frames": rec.num_frames,
            "width": rec.width,
            "height": rec.height,
            "codec": rec.codec,
            "status": rec.status,
            "reason": rec.reason,
            "warnings": rec.warnings,
            "dev": signed64(rec.dev),
            "inode": signed64(rec.inode),
            "updated_at": now,
            "run_id": run_id,
            "generation": generation,
        }
        if rec.status == INDEXED:
            values["indexed_at"] = now
        existing = conn.execute(select(videos.c.id).where(videos.c.path == rec.path)).scalar_one_or_none()
        if existing is None:
            result = conn.execute(videos.insert().values(path=rec.path, **values))
            return _inserted_id(result)
        conn.execute(update(videos).where(videos.c.id == existing).values(**values))
        return int(existing)

    @staticmethod
    def _retire_segments(conn: Connection, video_ids: Sequence[int], generation: int) -> None:
        if not video_ids:
            return
        conn.execute(
            update(segments)
            .where(segments.c.video_id.in_(bindparam("vids", expanding=True)), segments.c.gen_removed.is_(None))
            .values(gen_removed=generation),
            {"vids": list(video_ids)},
        )

    # -- reader side -------------------------------------------------------------------------------------

    def videos_by_path(self, paths: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Current video rows keyed by path (all of them when `paths` is None)."""
        query = select(videos)
        with self.engine.connect() as conn:
            if paths is None:
                rows = conn.execute(query).mappings().all()
            else:
                rows = []
                for i in range(0, len(paths), 500):
                    chunk = list(paths[i : i + 500])
                    rows.extend(
                        conn.execute(
                            query.where(videos.c.path.in_(bindparam("p", expanding=True))), {"p": chunk}
                        ).mappings()
                    )
        return {r["path"]: dict(r) for r in rows}

    def segment_rows(self, ids: Sequence[int], generation: int) -> dict[int, dict[str, Any]]:
        """Segments (with their video's path) visible in `generation`, by id; unknown or dead ids are absent."""
        if len(ids) == 0:
            return {}
        query = (
            select(
                segments.c.id,
                segments.c.video_id,
                segments.c.seq,
                segments.c.start_s,
                segments.c.end_s,
                segments.c.frame_start,
                segments.c.frame_end,
                segments.c.shard,
                segments.c.row,
                videos.c.path,
                videos.c.duration_s,
            )
            .join(videos, videos.c.id == segments.c.video_id)
            .where(segments.c.id.in_(bindparam("ids", expanding=True)), live_at(generation))
        )
        out: dict[int, dict[str, Any]] = {}
        keys = [str(c.key) for c in query.selected_columns]
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 900):
                chunk = [int(x) for x in ids[i : i + 900]]
                # Plain tuples: building RowMappings costs ~8x more, and this runs on every search.
                for row in conn.execute(query, {"ids": chunk}).all():
                    out[int(row[0])] = dict(zip(keys, row, strict=True))
        return out

    def live_segment_ids(self, generation: int) -> np.ndarray:
        with self.engine.connect() as conn:
            ids = conn.execute(select(segments.c.id).where(live_at(generation)).order_by(segments.c.id)).scalars()
            return np.fromiter(ids, dtype=np.int64)

    def retired_since(self, since: int, generation: int) -> int:
        """How many segments visible in generation `since` are gone by `generation` (ANN over-fetch)."""
        query = (
            select(func.count())
            .select_from(segments)
            .where(segments.c.gen_removed > since, segments.c.gen_removed <= generation)
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def get_meta(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(select(meta_table.c.value).where(meta_table.c.key == key)).scalar_one_or_none()
        return None if value is None else str(value)

    def set_meta(self, key: str, value: str) -> None:
        with self.engine.begin() as conn:
            if conn.execute(select(meta_table.c.key).where(meta_table.c.key == key)).first() is None:
                conn.execute(meta_table.insert().values(key=key, value=value))
            else:
                conn.execute(update(meta_table).where(meta_table.c.key == key).values(value=value))

    def live_segment_count(self, generation: int) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(segments).where(live_at(generation))).scalar_one())

    def status_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(videos.c.status, func.count()).group_by(videos.c.status)).all()
        return {str(status): int(n) for status, n in rows}

    def failures(self) -> list[dict[str, Any]]:
        """Files whose last attempt failed or was skipped, with the reason."""
        query = (
            select(videos.c.path, videos.c.status, videos.c.reason, videos.c.warnings, videos.c.updated_at)
            .where(videos.c.status.in_([FAILED, SKIPPED]))
            .order_by(videos.c.path)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def last_run(self) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).order_by(runs.c.id.desc()).limit(1)).mappings().first()
        return dict(row) if row else None

    def shard_rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(shards).order_by(shards.c.generation)).mappings()]

    # -- integrity (see store.integrity) -------------------------------------------------------------------

    def shard_videos(self, shard: str, generation: int) -> list[str]:
        """Paths of the videos with segments visible in `generation` whose vectors are in shard `shard`."""
        query = (
            select(videos.c.path)
            .distinct()
            .select_from(segments.join(videos, videos.c.id == segments.c.video_id))
            .where(segments.c.shard == shard, live_at(generation))
            .order_by(videos.c.path)
        )
        with self.engine.connect() as conn:
            return [str(p) for p in conn.execute(query).scalars()]

    def set_shard_checksums(self, name: str, checksums: dict[str, str]) -> None:
        """Record a shard's file checksums again (a row-hash file added to a shard written before them)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(shards).where(shards.c.name == name).values(checksums=json.dumps(checksums, sort_keys=True))
            )

    def drop_shard_rows(self, names: Sequence[str]) -> None:
        """Forget shards no live segment uses any more (damaged ones whose videos were re-embedded)."""
        if names:
            with self.engine.begin() as conn:
                query = delete(shards).where(shards.c.name.in_(bindparam("n", expanding=True)))
                conn.execute(query, {"n": list(names)})


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
    "SKIPPED",
    "BatchEntry",
    "Catalog",
    "FileUpdate",
    "SQLAlchemyError",
    "SegmentRecord",
    "VideoRecord",
    "live_at",
]


def _inserted_id(result: Any) -> int:
    key = result.inserted_primary_key
    if key is None:
        raise SQLAlchemyError("INSERT returned no primary key")
    return int(key[0])
