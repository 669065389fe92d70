"""The catalog's tables: videos, segments, shards, generations, runs, the id counter and saved tags.

Rows are versioned by generation instead of updated in place: a segment carries the generation that added it
and, once replaced or pruned, the generation that removed it. A reader pinned to the manifest's generation
``g`` sees ``gen_added <= g < gen_removed`` (`live_at`) and so never observes a half-published batch.
Only `xclip_search.store` names these tables; every other module reads and writes through `Catalog`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    or_,
)

from . import migrations

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
    # The shot the segment belongs to (shot-aligned segmentation): a hit widens over its neighbours only within
    # one shot. NULL where shots were not detected (fixed windows, whole videos, catalogs before schema 4).
    Column("shot", Integer),
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

# Timed text of a video (`store.cues.Cue`): subtitle cues from sidecar files or container streams, and
# transcribed speech. ``body`` is the text as the full-text index reads it (`store.fulltext.body`); the index
# itself is backend-specific DDL (an FTS5 table on SQLite, a GIN index on PostgreSQL), made by `fulltext.create`.
# Cues are not versioned by generation: a video's cues of one source are replaced as a whole
# (`Catalog.replace_cues`), and search maps them onto the segments visible in its own generation.
cues = Table(
    "cues",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("video_id", Integer, ForeignKey("videos.id"), nullable=False),
    Column("source", String(16), nullable=False),
    Column("start_s", Float, nullable=False),
    Column("end_s", Float, nullable=False),
    Column("text", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("language", String(35)),
    Index("ix_cues_video", "video_id", "source", "start_s"),
    sqlite_autoincrement=True,
)

# What each video's cues of one source were made from (`stamp`: e.g. the sidecar files' names, sizes and mtimes,
# or the speech model), so a re-run re-reads a source only when that changed. A video with a source tried and
# nothing found has a row with count 0.
cue_tracks = Table(
    "cue_tracks",
    metadata,
    Column("video_id", Integer, ForeignKey("videos.id"), primary_key=True),
    Column("source", String(16), primary_key=True),
    Column("stamp", Text, nullable=False),
    Column("count", Integer, nullable=False),
    Column("updated_at", String(40), nullable=False),
)

# Concepts learned from examples (`learn`): a label scored by a small model over the stored v (and X-CLIP's score
# of its text). `model` is the classifier as JSON (no pickle); `model_hash` the configuration hash of the X-CLIP
# checkpoint it was learned with, checked against the index's model before use.
concepts = Table(
    "concepts",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("model", Text, nullable=False),
    Column("model_source", Text, nullable=False),
    Column("model_hash", String(128), nullable=False),
    Column("method", String(64), nullable=False),
    Column("text", Text),
    Column("examples", Text, nullable=False),
    Column("positives", Integer, nullable=False),
    Column("negatives", Integer, nullable=False),
    Column("held_out_accuracy", Float),
    Column("learned_at", String(40), nullable=False),
)

# Statuses a video row can hold; what a run did to each file (unchanged, moved, ...) is in the run's report.
INDEXED, FAILED, SKIPPED, REMOVED = "indexed", "failed", "skipped", "removed"


def live_at(generation: int) -> Any:
    """SQL condition: the segment is visible in `generation`."""
    return and_(
        segments.c.gen_added <= generation,
        or_(segments.c.gen_removed.is_(None), segments.c.gen_removed > generation),
    )


__all__ = [
    "FAILED",
    "INDEXED",
    "REMOVED",
    "SCHEMA_VERSION",
    "SKIPPED",
    "concepts",
    "cue_tracks",
    "cues",
    "generations",
    "id_counter",
    "live_at",
    "meta_table",
    "metadata",
    "runs",
    "segments",
    "shards",
    "tags",
    "videos",
]
