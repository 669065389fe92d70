"""Read-only catalog views the server needs and `Index` does not offer yet (an adapter, see ``service.py``).

Every query is pinned to one generation (``live_at``) and every value reaches SQL as a bound parameter.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import bindparam, func, select

from ..errors import InvalidArgumentError
from ..store.catalog import INDEXED, Catalog, live_at, runs, segments, videos
from ..store.snapshot import Snapshot

MAX_FILTER_IDS = 1000
_VIDEO_COLUMNS = (
    videos.c.id,
    videos.c.path,
    videos.c.status,
    videos.c.reason,
    videos.c.duration_s,
    videos.c.fps,
    videos.c.num_frames,
    videos.c.width,
    videos.c.height,
    videos.c.codec,
    videos.c.size,
    videos.c.indexed_at,
    videos.c.updated_at,
)


@dataclass(frozen=True)
class SearchFilters:
    """Restrictions on which segments a search may return.

    `path` is a shell glob over the absolute path (``*.webm``, ``*/holidays/*``; case-sensitive); `video_ids`
    keeps only those videos; `min_duration` / `max_duration` bound the video's length in seconds.
    """

    path: str | None = None
    video_ids: tuple[int, ...] = ()
    min_duration: float | None = None
    max_duration: float | None = None

    def __post_init__(self) -> None:
        for name in ("min_duration", "max_duration"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise InvalidArgumentError(f"Invalid {name} ({value}). It must be a finite number >= 0.")
        if self.min_duration is not None and self.max_duration is not None and self.min_duration > self.max_duration:
            raise InvalidArgumentError(
                f"Invalid duration range ({self.min_duration} > {self.max_duration}). min_duration must not "
                "exceed max_duration."
            )
        if len(self.video_ids) > MAX_FILTER_IDS:
            raise InvalidArgumentError(f"Too many video ids ({len(self.video_ids)}). At most {MAX_FILTER_IDS}.")

    @property
    def active(self) -> bool:
        return bool(self.path or self.video_ids or self.min_duration is not None or self.max_duration is not None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "video_ids": list(self.video_ids),
            "min_duration": self.min_duration,
            "max_duration": self.max_duration,
        }


def allowed_segment_ids(catalog: Catalog, generation: int, filters: SearchFilters) -> np.ndarray:
    """Ids of the live segments that pass `filters`, sorted."""
    query = (
        select(segments.c.id, videos.c.path)
        .join(videos, videos.c.id == segments.c.video_id)
        .where(live_at(generation))
        .order_by(segments.c.id)
    )
    params: dict[str, Any] = {}
    if filters.video_ids:
        query = query.where(videos.c.id.in_(bindparam("vids", expanding=True)))
        params["vids"] = [int(v) for v in filters.video_ids]
    if filters.min_duration is not None:
        query = query.where(videos.c.duration_s >= bindparam("dmin"))
        params["dmin"] = float(filters.min_duration)
    if filters.max_duration is not None:
        query = query.where(videos.c.duration_s <= bindparam("dmax"))
        params["dmax"] = float(filters.max_duration)
    with catalog.engine.connect() as conn:
        rows = conn.execute(query, params).all()
    if filters.path:
        pattern = filters.path
        rows = [r for r in rows if fnmatch.fnmatchcase(str(r[1]), pattern)]
    return np.array([int(r[0]) for r in rows], dtype=np.int64)


def video_row(catalog: Catalog, video_id: int) -> dict[str, Any] | None:
    with catalog.engine.connect() as conn:
        row = conn.execute(select(*_VIDEO_COLUMNS).where(videos.c.id == bindparam("id")), {"id": video_id})
        found = row.mappings().first()
    return dict(found) if found else None


def video_segments(catalog: Catalog, generation: int, video_id: int) -> list[dict[str, Any]]:
    """The live segments of one video in time order."""
    query = (
        select(
            segments.c.id,
            segments.c.seq,
            segments.c.start_s,
            segments.c.end_s,
            segments.c.frame_start,
            segments.c.frame_end,
            segments.c.shard,
            segments.c.row,
        )
        .where(segments.c.video_id == bindparam("vid"), live_at(generation))
        .order_by(segments.c.seq)
    )
    with catalog.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query, {"vid": video_id}).mappings()]


def list_videos(
    catalog: Catalog,
    generation: int,
    *,
    status: str | None,
    name: str | None,
    offset: int,
    limit: int,
) -> tuple[int, list[dict[str, Any]]]:
    """(total, page) of video rows ordered by path, each with its live segment count."""
    where = []
    params: dict[str, Any] = {}
    if status:
        where.append(videos.c.status == bindparam("status"))
        params["status"] = status
    if name:
        escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(videos.c.path.like(bindparam("name"), escape="\\"))
        params["name"] = f"%{escaped}%"
    live_count = (
        select(func.count())
        .select_from(segments)
        .where(segments.c.video_id == videos.c.id, live_at(generation))
        .scalar_subquery()
    )
    first_segment = (
        select(func.min(segments.c.id)).where(segments.c.video_id == videos.c.id, live_at(generation)).scalar_subquery()
    )
    query = (
        select(*_VIDEO_COLUMNS, live_count.label("segments"), first_segment.label("first_segment"))
        .where(*where)
        .order_by(videos.c.path)
        .offset(bindparam("offset"))
        .limit(bindparam("limit"))
    )
    total_q = select(func.count()).select_from(videos).where(*where)
    with catalog.engine.connect() as conn:
        total = int(conn.execute(total_q, params).scalar_one())
        rows = [dict(r) for r in conn.execute(query, {**params, "offset": offset, "limit": limit}).mappings()]
    return total, rows


def index_segment_page(snapshot: Snapshot, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """(total, page) of live segments ordered by path and time, for tagging a whole index page by page."""
    generation = snapshot.generation
    query = (
        select(
            segments.c.id,
            segments.c.video_id,
            segments.c.start_s,
            segments.c.end_s,
            videos.c.path,
        )
        .join(videos, videos.c.id == segments.c.video_id)
        .where(live_at(generation))
        .order_by(videos.c.path, segments.c.seq)
        .offset(bindparam("offset"))
        .limit(bindparam("limit"))
    )
    with snapshot.catalog.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query, {"offset": offset, "limit": limit}).mappings()]
    return snapshot.catalog.live_segment_count(generation), rows


def recorded_roots(catalog: Catalog) -> list[tuple[str | None, list[str]]]:
    """Each indexing run's ``roots`` JSON with the paths of the videos it indexed (for relative roots)."""
    with catalog.engine.connect() as conn:
        run_rows = conn.execute(select(runs.c.id, runs.c.roots)).all()
        by_run: dict[int, list[str]] = {}
        query = select(videos.c.run_id, videos.c.path).where(videos.c.status == INDEXED)
        for run_id, path in conn.execute(query):
            if run_id is not None:
                by_run.setdefault(int(run_id), []).append(str(path))
    return [(roots_json, by_run.get(int(run_id), [])) for run_id, roots_json in run_rows]


def gather_v(snapshot: Snapshot, ids: np.ndarray) -> np.ndarray:
    """``v`` rows (n, D) for live segment ids, without touching their (much larger) ``Z``."""
    view = snapshot.vectors
    ids = np.asarray(ids, dtype=np.int64)
    out = np.empty((len(ids), view.dim), np.float32)
    if len(ids) == 0:
        return out
    shard_idx, rows = view.locate(ids)
    for s in np.unique(shard_idx):
        sel = np.nonzero(shard_idx == s)[0]
        out[sel] = view.shards[int(s)].v[rows[sel]]
    return out
