"""The writing half of `Catalog`: runs, id reservation, one atomic commit per batch, and saved tags.

A batch is recorded as one generation in one transaction: its shard, its video rows, their segments, the
removals and the moved files, so a reader pinned to an older generation never sees part of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, bindparam, delete, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from .catalog_cues import delete_video_cues, write_cues
from .manifest import ShardInfo, now_iso
from .records import BatchEntry, FileUpdate, VideoRecord, signed64
from .schema import INDEXED, REMOVED, generations, id_counter, meta_table, runs, segments, shards, tags, videos


class CatalogWrites:
    """Writer-side statements (the indexer's `IndexWriter`, saving tags)."""

    engine: Engine

    if TYPE_CHECKING:  # provided by CatalogReads

        def videos_by_path(self, paths: Sequence[str] | None = None) -> dict[str, dict[str, Any]]: ...

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
                _insert_shard(conn, shard, generation, now)
            for entry in entries:
                video_id = self._upsert_video(conn, entry.video, generation, run_id, now)
                self._retire_segments(conn, [video_id], generation)
                # The file's own text streams, read with its frames: replaced with the video (stamp: its content).
                stamp = (entry.video.content_hash or "") if entry.cues else None  # no record for files without any
                write_cues(conn, video_id, "embedded", entry.cues, stamp)
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
                                "shot": s.shot,
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
                delete_video_cues(conn, ids)  # a removed video's text goes with it
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

    def set_meta(self, key: str, value: str) -> None:
        with self.engine.begin() as conn:
            _set_meta(conn, key, value)

    # -- compaction (see store.compaction) -----------------------------------------------------------------

    def commit_compaction(
        self,
        generation: int,
        new_shards: Sequence[ShardInfo],
        placement: Sequence[tuple[int, str, int]],
        dropped: Sequence[str],
        retired: str,
    ) -> None:
        """Record a compaction as `generation`, atomically: the new shards, each moved segment's (id, shard,
        row), the old shards' rows gone and the retired-files record (meta ``retired_shards``) replaced.

        Segment ids do not change, so tags, the ANN's ids and readers pinned to an older generation (which find
        vectors by id in the shards their manifest names) are unaffected.
        """
        now = now_iso()
        with self.engine.begin() as conn:
            conn.execute(generations.insert().values(gen=generation, created_at=now, run_id=None))
            for shard in new_shards:
                _insert_shard(conn, shard, generation, now)
            if placement:
                conn.execute(
                    update(segments)
                    .where(segments.c.id == bindparam("sid"))
                    .values(shard=bindparam("new_shard"), row=bindparam("new_row")),
                    [{"sid": int(i), "new_shard": name, "new_row": int(r)} for i, name, r in placement],
                )
            if dropped:
                conn.execute(
                    delete(shards).where(shards.c.name.in_(bindparam("n", expanding=True))), {"n": list(dropped)}
                )
            _set_meta(conn, "retired_shards", retired)

    # -- integrity (see store.integrity) -------------------------------------------------------------------

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


def _set_meta(conn: Connection, key: str, value: str) -> None:
    if conn.execute(select(meta_table.c.key).where(meta_table.c.key == key)).first() is None:
        conn.execute(meta_table.insert().values(key=key, value=value))
    else:
        conn.execute(update(meta_table).where(meta_table.c.key == key).values(value=value))


def _inserted_id(result: Any) -> int:
    key = result.inserted_primary_key
    if key is None:
        raise SQLAlchemyError("INSERT returned no primary key")
    return int(key[0])


def _insert_shard(conn: Connection, shard: ShardInfo, generation: int, now: str) -> None:
    """The `shards` row of a newly published shard (a batch's, or one a compaction wrote)."""
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


__all__ = ["CatalogWrites"]
