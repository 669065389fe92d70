"""Typed records of the catalog: what writers hand it (`VideoRecord`, `SegmentRecord`, ...) and what readers get
back (`VideoRow`, `SegmentRow`, `VideoListing`, `RunRoots`, `TagRow`), so no module reads a row by string key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .cues import Cue


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
    shot: int | None = None


@dataclass
class BatchEntry:
    """A video row to write with its segments, and the text streams found inside its file (`cues`, source
    ``embedded``): a video written again always gets its embedded cues replaced, by none when it has none."""

    video: VideoRecord
    segments: list[SegmentRecord] = field(default_factory=list)
    cues: list[Cue] = field(default_factory=list)


@dataclass(frozen=True)
class VideoRow:
    """A `videos` row as a reader sees it (every column, in the table's order)."""

    id: int
    path: str
    size: int | None = None
    mtime_ns: int | None = None
    content_hash: str | None = None
    duration_s: float | None = None
    fps: float | None = None
    num_frames: int | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    status: str = ""
    reason: str | None = None
    warnings: int = 0
    indexed_at: str | None = None
    updated_at: str = ""
    run_id: int | None = None
    generation: int = 0
    dev: int | None = None
    inode: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> VideoRow:
        return cls(**{name: row[name] for name in _VIDEO_FIELDS if name in row})


_VIDEO_FIELDS = tuple(f.name for f in fields(VideoRow))


@dataclass(frozen=True)
class VideoListing:
    """A video in a listing, with how many live segments it has and the first one's id (its thumbnail)."""

    video: VideoRow
    segments: int
    first_segment: int | None


@dataclass(frozen=True)
class SegmentRow:
    """A live segment with where its vectors are and its video's path and frame rate."""

    id: int
    video_id: int
    seq: int
    start_s: float
    end_s: float
    frame_start: int
    frame_end: int
    shard: str
    row: int
    path: str
    fps: float | None = None
    duration_s: float | None = None
    shot: int | None = None  # the detected shot it belongs to; None where shots were not detected


@dataclass(frozen=True)
class Shot:
    """One shot of a video: its consecutive live segments sharing a `shot` number (a segment without one is a
    shot by itself), so the page can show the footage's cuts rather than its windows."""

    number: int | None
    segments: tuple[SegmentRow, ...]

    @property
    def start_s(self) -> float:
        return self.segments[0].start_s

    @property
    def end_s(self) -> float:
        return self.segments[-1].end_s

    @property
    def representative(self) -> SegmentRow:
        """The middle segment (the first of two): the one whose thumbnail stands for the shot."""
        return self.segments[(len(self.segments) - 1) // 2]


def group_shots(rows: list[SegmentRow]) -> list[Shot]:
    """Consecutive segments (time order) with the same non-null `shot` form one shot; NULL ones stand alone."""
    out: list[Shot] = []
    run: list[SegmentRow] = []
    for row in rows:
        if run and (row.shot is None or run[-1].shot != row.shot or run[-1].video_id != row.video_id):
            out.append(Shot(run[0].shot, tuple(run)))
            run = []
        run.append(row)
    if run:
        out.append(Shot(run[0].shot, tuple(run)))
    return out


@dataclass(frozen=True)
class RunRoots:
    """An indexing run's recorded ``roots`` (JSON text) and the paths of the videos it indexed."""

    roots_json: str | None
    paths: list[str]


@dataclass(frozen=True)
class TagRow:
    """A saved tag: a label on a segment with its probability and score over the vocabulary it was saved with."""

    segment_id: int
    label: str
    prob: float
    score: float
    tagged_at: str


__all__ = [
    "BatchEntry",
    "FileUpdate",
    "RunRoots",
    "SegmentRecord",
    "SegmentRow",
    "TagRow",
    "VideoListing",
    "VideoRecord",
    "VideoRow",
    "signed64",
]
