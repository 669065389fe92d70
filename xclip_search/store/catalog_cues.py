"""The cue half of `Catalog`: a video's timed text (subtitles, speech) written, read and searched by full text.

Cues belong to a video and a source (`store.cues.CUE_SOURCES`). A source's cues of one video are always
replaced as a whole, in one transaction with the record of what they were made from (`cue_tracks.stamp`), so a
reader sees the old set or the new one, and an interrupted run re-reads that source next time. The full-text
index follows the ``cues`` rows by itself (FTS5 triggers on SQLite, an expression index on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Engine, bindparam, delete, func, inspect, select
from sqlalchemy.engine import Connection

from . import fulltext
from .cues import Cue, CueMatch, CueSource, StoredCue
from .manifest import now_iso
from .schema import cue_tracks, cues


class CatalogCues:
    """Cue statements: the indexer's text tracks, speech transcription, search, the page's subtitles, export."""

    engine: Engine

    def replace_cues(self, video_id: int, source: CueSource, new: Sequence[Cue], stamp: str | None) -> int:
        """Replace every cue of `source` that video `video_id` has with `new`; returns how many were written.

        `stamp` records what the cues were made from (a sidecar file's name, size and mtime; a speech model's id),
        so an incremental run can tell with `cue_stamps` whether the source must be read again. With
        `stamp=None` the source is forgotten altogether (no cues, no record): the next run reads it afresh.
        Each cue's own `source` must be `source`. One transaction: readers see the old cues or the new ones.
        """
        with self.engine.begin() as conn:
            return write_cues(conn, video_id, source, new, stamp)

    def drop_cues(self, video_ids: Sequence[int], source: CueSource | None = None) -> None:
        """Forget the cues (of `source`, or all) of `video_ids` and the record of what they were made from."""
        with self.engine.begin() as conn:
            _delete_cues(conn, video_ids, source)

    def cue_stamps(self, source: CueSource) -> dict[int, str]:
        """What each video's `source` cues were made from (`replace_cues`' stamp), by video id."""
        if not self.has_cues_table():
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(cue_tracks.c.video_id, cue_tracks.c.stamp).where(cue_tracks.c.source == source))
            return {int(v): str(s) for v, s in rows}

    def videos_with_cues(self, sources: Sequence[CueSource]) -> set[int]:
        """The videos that have at least one cue of any of `sources` (speech transcription skips videos that
        carry subtitles)."""
        if not self.has_cues_table():
            return set()
        query = select(cue_tracks.c.video_id).where(
            cue_tracks.c.source.in_(bindparam("sources", expanding=True)), cue_tracks.c.count > 0
        )
        with self.engine.connect() as conn:
            return {int(v) for (v,) in conn.execute(query, {"sources": list(sources)})}

    def has_cues_table(self) -> bool:
        return bool(inspect(self.engine).has_table("cues"))

    def has_cues(self) -> bool:
        """Whether any video has a cue (search then matches by text as well as by sight)."""
        with self.engine.connect() as conn:
            return conn.execute(select(cues.c.id).limit(1)).first() is not None

    def cue_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(cues)).scalar_one())

    def cues_of(self, video_id: int) -> list[StoredCue]:
        """Every cue of one video in time order (all sources)."""
        query = select(*_CUE_COLUMNS).where(cues.c.video_id == bindparam("vid")).order_by(cues.c.start_s, cues.c.id)
        with self.engine.connect() as conn:
            return [_stored(r) for r in conn.execute(query, {"vid": int(video_id)}).all()]

    def cues_by_id(self, ids: Sequence[int]) -> dict[int, StoredCue]:
        out: dict[int, StoredCue] = {}
        query = select(*_CUE_COLUMNS).where(cues.c.id.in_(bindparam("ids", expanding=True)))
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 900):
                for r in conn.execute(query, {"ids": [int(x) for x in ids[i : i + 900]]}).all():
                    out[int(r[0])] = _stored(r)
        return out

    def iter_cues(self, batch: int = 4096) -> Iterator[list[StoredCue]]:
        """Every cue by id, in batches (export)."""
        last = -1
        while True:
            query = select(*_CUE_COLUMNS).where(cues.c.id > last).order_by(cues.c.id).limit(batch)
            with self.engine.connect() as conn:
                rows = [_stored(r) for r in conn.execute(query).all()]
            if not rows:
                return
            last = rows[-1].id
            yield rows

    def search_cues(
        self, query: fulltext.TextQuery, *, limit: int, video_ids: Sequence[int] | None = None
    ) -> list[CueMatch]:
        """The `limit` cues that match `query` best, best first (of `video_ids` only, when given)."""
        with self.engine.connect() as conn:
            found = fulltext.match(conn, query, limit=limit, video_ids=video_ids)
        rows = self.cues_by_id([m.cue_id for m in found])
        return [CueMatch(rows[m.cue_id], m.score) for m in found if m.cue_id in rows]


_CUE_COLUMNS = (
    cues.c.id,
    cues.c.video_id,
    cues.c.text,
    cues.c.start_s,
    cues.c.end_s,
    cues.c.language,
    cues.c.source,
)


def _stored(row: Any) -> StoredCue:
    return StoredCue(
        int(row[0]),
        int(row[1]),
        Cue(str(row[2]), float(row[3]), float(row[4]), row[5], str(row[6])),  # type: ignore[arg-type]
    )


def write_cues(conn: Connection, video_id: int, source: CueSource, new: Sequence[Cue], stamp: str | None) -> int:
    """`Catalog.replace_cues` within a writer's transaction (a batch commit writes embedded cues with its videos)."""
    for cue in new:
        if cue.source != source:
            raise ValueError(f"a {cue.source} cue cannot be stored as {source}")
    _delete_cues(conn, [video_id], source)
    if new:
        conn.execute(
            cues.insert(),
            [
                {
                    "video_id": int(video_id),
                    "source": source,
                    "start_s": float(c.start),
                    "end_s": float(c.end),
                    "text": c.text,
                    "body": fulltext.body(c.text),
                    "language": c.language,
                }
                for c in new
            ],
        )
    if stamp is not None:  # the old record went with the old cues
        conn.execute(
            cue_tracks.insert().values(
                video_id=int(video_id), source=source, stamp=stamp, count=len(new), updated_at=now_iso()
            )
        )
    return len(new)


def delete_video_cues(conn: Connection, video_ids: Sequence[int]) -> None:
    """Within a writer's transaction: drop every cue of `video_ids` (removed videos) and their track records."""
    _delete_cues(conn, video_ids, None)


def _delete_cues(conn: Connection, video_ids: Sequence[int], source: str | None) -> None:
    ids = [int(v) for v in video_ids]
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        cue_q = delete(cues).where(cues.c.video_id.in_(bindparam("vids", expanding=True)))
        track_q = delete(cue_tracks).where(cue_tracks.c.video_id.in_(bindparam("vids", expanding=True)))
        if source is not None:
            cue_q = cue_q.where(cues.c.source == source)
            track_q = track_q.where(cue_tracks.c.source == source)
        conn.execute(cue_q, {"vids": chunk})
        conn.execute(track_q, {"vids": chunk})


__all__ = ["CatalogCues", "delete_video_cues", "write_cues"]
