"""The reading half of `Catalog`: segments, videos, tags and runs as seen by one generation.

Every query is pinned to a generation (`schema.live_at`) where liveness matters, every value is a bound
parameter, and the typed methods return records (`records`); the older dict-returning methods stay for callers
that have not moved yet.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import astuple, fields
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, Engine, Select, bindparam, func, inspect, select

from .records import RunRoots, SegmentRow, TagRow, VideoListing, VideoRow
from .schema import FAILED, INDEXED, SKIPPED, live_at, meta_table, runs, segments, shards, tags, videos


class CatalogReads:
    """Reader-side queries (search, filters, tags, neighbours, export, the server's metadata)."""

    engine: Engine

    def has_tags_table(self) -> bool:
        return bool(inspect(self.engine).has_table("tags"))

    def has_tags(self) -> bool:
        """Whether any tag was saved (indexes built before the tags table existed have none)."""
        if not self.has_tags_table():
            return False
        with self.engine.connect() as conn:
            return conn.execute(select(tags.c.segment_id).limit(1)).first() is not None

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
        """Every segment (id, seq, start_s, end_s, shot) of the given videos visible in `generation`, in time order."""
        out: dict[int, list[dict[str, Any]]] = {}
        if not video_ids:
            return out
        query = (
            select(
                segments.c.id,
                segments.c.video_id,
                segments.c.seq,
                segments.c.start_s,
                segments.c.end_s,
                segments.c.shot,
            )
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
        """`iter_segments` as lists of dicts (the record's fields as keys)."""
        for rows in self.iter_segments(generation, ids, batch):
            yield [dict(zip(_SEGMENT_KEYS, astuple(r), strict=True)) for r in rows]

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
        """Segments (with their video's path) visible in `generation`, by id; unknown or dead ids are absent.

        The first stage's row lookup (`Snapshot.coarse`); `segments_by_id` gives the same as `SegmentRow`s.
        """
        if len(ids) == 0:
            return {}
        query = _segment_select().where(segments.c.id.in_(bindparam("ids", expanding=True)), live_at(generation))
        out: dict[int, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 900):
                chunk = [int(x) for x in ids[i : i + 900]]
                # Plain tuples: building RowMappings costs ~8x more, and this runs on every search.
                for row in conn.execute(query, {"ids": chunk}).all():
                    out[int(row[0])] = dict(zip(_SEGMENT_KEYS, row, strict=True))
        return out

    def live_segment_ids(self, generation: int) -> np.ndarray:
        with self.engine.connect() as conn:
            ids = conn.execute(select(segments.c.id).where(live_at(generation)).order_by(segments.c.id)).scalars()
            return np.fromiter(ids, dtype=np.int64)

    def live_rows_by_shard(self, generation: int) -> dict[str, int]:
        """How many segments visible in `generation` each shard holds (compaction's dead-row count)."""
        query = select(segments.c.shard, func.count()).where(live_at(generation)).group_by(segments.c.shard)
        with self.engine.connect() as conn:
            return {str(name): int(n) for name, n in conn.execute(query).all()}

    def live_ids_in_shards(self, names: Sequence[str], generation: int) -> np.ndarray:
        """Sorted ids of the segments visible in `generation` whose vectors are in one of shards `names`."""
        if not names:
            return np.zeros(0, np.int64)
        query = (
            select(segments.c.id)
            .where(segments.c.shard.in_(bindparam("n", expanding=True)), live_at(generation))
            .order_by(segments.c.id)
        )
        with self.engine.connect() as conn:
            return np.fromiter(conn.execute(query, {"n": list(names)}).scalars(), dtype=np.int64)

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

    def failed_videos(self) -> list[VideoRow]:
        """Videos whose last attempt failed or was skipped (`VideoRow.reason` says why), by path."""
        query = select(videos).where(videos.c.status.in_([FAILED, SKIPPED])).order_by(videos.c.path)
        with self.engine.connect() as conn:
            return [VideoRow.from_row(r) for r in conn.execute(query).mappings()]

    def last_run(self) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).order_by(runs.c.id.desc()).limit(1)).mappings().first()
        return dict(row) if row else None

    def shard_rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(shards).order_by(shards.c.generation)).mappings()]

    # -- typed reads (records, not dict rows) ------------------------------------------------------------

    def video(self, video_id: int) -> VideoRow | None:
        """One video row by id (any status), or None."""
        with self.engine.connect() as conn:
            found = conn.execute(select(videos).where(videos.c.id == bindparam("id")), {"id": int(video_id)})
            row = found.mappings().first()
        return VideoRow.from_row(row) if row else None

    def videos_by_id(self, video_ids: Sequence[int] | None = None) -> list[VideoRow]:
        """Video rows by id order; all of them when `video_ids` is None."""
        return [VideoRow.from_row(r) for r in self.video_table(video_ids)]

    def video_at_path(self, path: str) -> VideoRow | None:
        """The video row recorded for `path` (any status), or None."""
        with self.engine.connect() as conn:
            found = conn.execute(select(videos).where(videos.c.path == bindparam("path")), {"path": path})
            row = found.mappings().first()
        return VideoRow.from_row(row) if row else None

    def list_videos(
        self, generation: int, *, status: str | None, name: str | None, offset: int, limit: int
    ) -> tuple[int, list[VideoListing]]:
        """(total, page) of videos ordered by path, each with its live segment count; `name` is a substring of
        the path (case-insensitive, LIKE wildcards taken literally)."""
        where = []
        params: dict[str, Any] = {}
        if status:
            where.append(videos.c.status == bindparam("status"))
            params["status"] = status
        if name:
            escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            # ilike: case-insensitive on both backends (SQLite's LIKE already is, PostgreSQL's is not).
            where.append(videos.c.path.ilike(bindparam("name"), escape="\\"))
            params["name"] = f"%{escaped}%"
        live_count = (
            select(func.count())
            .select_from(segments)
            .where(segments.c.video_id == videos.c.id, live_at(generation))
            .scalar_subquery()
        )
        first_segment = (
            select(func.min(segments.c.id))
            .where(segments.c.video_id == videos.c.id, live_at(generation))
            .scalar_subquery()
        )
        query = (
            select(videos, live_count.label("live_segments"), first_segment.label("first_segment"))
            .where(*where)
            .order_by(videos.c.path)
            .offset(bindparam("offset"))
            .limit(bindparam("limit"))
        )
        total_q = select(func.count()).select_from(videos).where(*where)
        with self.engine.connect() as conn:
            total = int(conn.execute(total_q, params).scalar_one())
            rows = conn.execute(query, {**params, "offset": offset, "limit": limit}).mappings().all()
        page = [
            VideoListing(
                VideoRow.from_row(r),
                int(r["live_segments"]),
                None if r["first_segment"] is None else int(r["first_segment"]),
            )
            for r in rows
        ]
        return total, page

    def segment(self, segment_id: int, generation: int) -> SegmentRow | None:
        """One segment visible in `generation`, or None."""
        found = self.segments_by_id([segment_id], generation)
        return found.get(int(segment_id))

    def segments_by_id(self, ids: Sequence[int], generation: int) -> dict[int, SegmentRow]:
        """Segments visible in `generation`, by id; unknown or dead ids are absent."""
        out: dict[int, SegmentRow] = {}
        if len(ids) == 0:
            return out
        query = _segment_select().where(segments.c.id.in_(bindparam("ids", expanding=True)), live_at(generation))
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 900):
                chunk = [int(x) for x in ids[i : i + 900]]
                for row in conn.execute(query, {"ids": chunk}).all():
                    out[int(row[0])] = SegmentRow(*row)
        return out

    def segments_of_videos(self, video_ids: Sequence[int], generation: int) -> dict[int, list[SegmentRow]]:
        """The segments of each video visible in `generation`, in time order (videos without any are absent)."""
        out: dict[int, list[SegmentRow]] = {}
        if not video_ids:
            return out
        query = _segment_select().where(segments.c.video_id.in_(bindparam("vids", expanding=True)), live_at(generation))
        with self.engine.connect() as conn:
            ids = sorted({int(v) for v in video_ids})
            for i in range(0, len(ids), 900):
                rows = conn.execute(query.order_by(segments.c.video_id, segments.c.seq), {"vids": ids[i : i + 900]})
                for row in rows.all():
                    seg = SegmentRow(*row)
                    out.setdefault(seg.video_id, []).append(seg)
        return out

    def iter_segments(
        self, generation: int, ids: np.ndarray | None = None, batch: int = 4096
    ) -> Iterator[list[SegmentRow]]:
        """Segments visible in `generation` by id order, in batches; `ids` (sorted live ids) restricts."""
        base = _segment_select()
        if ids is not None:
            query = base.where(segments.c.id.in_(bindparam("ids", expanding=True))).order_by(segments.c.id)
            for i in range(0, len(ids), 900):
                chunk = [int(x) for x in ids[i : i + 900]]
                with self.engine.connect() as conn:
                    rows = [SegmentRow(*r) for r in conn.execute(query, {"ids": chunk}).all()]
                if rows:
                    yield rows
            return
        last = -1
        while True:
            query = base.where(live_at(generation), segments.c.id > last).order_by(segments.c.id).limit(batch)
            with self.engine.connect() as conn:
                rows = [SegmentRow(*r) for r in conn.execute(query).all()]
            if not rows:
                return
            last = rows[-1].id
            yield rows

    def shard_segments(self, shard_name: str) -> list[SegmentRow]:
        """Every segment row stored in one shard (live or not): what its thumbnails are made from."""
        query = _segment_select().where(segments.c.shard == bindparam("shard"))
        with self.engine.connect() as conn:
            return [SegmentRow(*r) for r in conn.execute(query, {"shard": shard_name}).all()]

    def run_roots(self) -> list[RunRoots]:
        """Each indexing run's ``roots`` JSON with the paths of the videos it indexed (for relative roots)."""
        with self.engine.connect() as conn:
            run_rows = conn.execute(select(runs.c.id, runs.c.roots)).all()
            by_run: dict[int, list[str]] = {}
            query = select(videos.c.run_id, videos.c.path).where(videos.c.status == INDEXED)
            for run_id, path in conn.execute(query):
                if run_id is not None:
                    by_run.setdefault(int(run_id), []).append(str(path))
        return [RunRoots(roots_json, by_run.get(int(run_id), [])) for run_id, roots_json in run_rows]

    def saved_tags(self, generation: int, ids: np.ndarray | None = None) -> list[TagRow]:
        """Saved tags of the segments visible in `generation` (of `ids` only, if given), most probable first."""
        if not self.has_tags_table():
            return []
        query = (
            select(tags.c.segment_id, tags.c.label, tags.c.prob, tags.c.score, tags.c.tagged_at)
            .join(segments, segments.c.id == tags.c.segment_id)
            .where(live_at(generation))
            .order_by(tags.c.segment_id, tags.c.prob.desc())
        )
        with self.engine.connect() as conn:
            rows = [TagRow(int(r[0]), str(r[1]), float(r[2]), float(r[3]), str(r[4])) for r in conn.execute(query)]
        if ids is not None:
            keep = set(ids.tolist())
            rows = [r for r in rows if r.segment_id in keep]
        return rows

    def count_segments_where(self, generation: int, condition: ColumnElement[bool] | None) -> int:
        """How many segments visible in `generation` satisfy `condition`."""
        query = select(func.count()).select_from(segments.join(videos, videos.c.id == segments.c.video_id))
        query = query.where(live_at(generation))
        if condition is not None:
            query = query.where(condition)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

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


_SEGMENT_KEYS = tuple(f.name for f in fields(SegmentRow))


def _segment_select() -> Select[Any]:
    """Columns of a `SegmentRow`, in its field order."""
    return select(
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
        videos.c.fps,
        videos.c.duration_s,
        segments.c.shot,
    ).join(videos, videos.c.id == segments.c.video_id)


__all__ = ["CatalogReads"]
