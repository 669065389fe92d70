"""What an indexing run writes for each file: its catalog rows and its line in the run's report.

Whichever way a run encodes (in this process, `ingest`, or on a Ray cluster, `distributed`), a file ends the
same way: an indexed file gets the same `VideoRecord` and segment ids handed out in the same blocks, a failed or
skipped file the same row and reason, and every file one `FileOutcome`. Torch-free, like the rest of the
bookkeeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xclip_search.store.catalog import FAILED, INDEXED, SegmentRecord, VideoRecord
from xclip_search.store.writer import IndexWriter

from .pool import FileDone, FileFailed
from .segments import SegmentPlan
from .walk import FoundFile


@dataclass(frozen=True)
class FileOutcome:
    """One file's line in the run's report: its status, the reason, and what it added."""

    path: str
    status: str
    reason: str | None = None
    segments: int = 0
    warnings: int = 0
    moved_from: str | None = None  # a moved file's earlier path


class SegmentIds:
    """Hands out segment ids reserved in blocks: one catalog transaction (and fsync) per block, not per video.

    Ids reserved but unused when a run ends or crashes are simply never used (see the catalog's id counter).
    """

    def __init__(self, writer: IndexWriter, block: int) -> None:
        self._writer = writer
        self._block = block
        self._next = self._end = 0

    def take(self, count: int) -> int:
        if self._end - self._next < count:
            size = max(count, self._block)
            self._next = self._writer.reserve_ids(size)
            self._end = self._next + size
        first = self._next
        self._next += count
        return first

    def records(self, plans: Sequence[SegmentPlan], first_row: int | None = None) -> list[SegmentRecord]:
        """The catalog rows of one file's segments, with fresh ids (and their rows in a written shard)."""
        first = self.take(len(plans))
        return [
            SegmentRecord(
                seq=p.seq,
                start_s=p.start_s,
                end_s=p.end_s,
                frame_start=p.frame_start,
                frame_end=p.frame_end,
                id=first + k,
                row=-1 if first_row is None else first_row + k,
                shot=p.shot,
            )
            for k, p in enumerate(plans)
        ]


def indexed_record(f: FoundFile, done: FileDone) -> VideoRecord:
    """The catalog row of a file whose segments were all decoded."""
    summary = done.summary
    assert summary is not None
    info = summary.info
    return _row(
        f,
        INDEXED,
        _note(done),
        done.content_hash,
        done.warnings,
        duration_s=summary.duration_s,
        fps=info.fps,
        num_frames=info.num_frames,
        width=info.width,
        height=info.height,
        codec=summary.codec,
    )


def indexed_outcome(video: VideoRecord, segments: int) -> FileOutcome:
    return FileOutcome(video.path, INDEXED, video.reason, segments, video.warnings)


def record_failure(writer: IndexWriter, f: FoundFile, event: FileFailed) -> FileOutcome:
    """Queue the catalog row of a file that failed or was skipped; returns its report line."""
    status = event.status if event.status != INDEXED else FAILED
    writer.record(_row(f, status, event.reason, event.content_hash, event.warnings))
    return FileOutcome(f.path, status, event.reason, warnings=event.warnings)


def _row(
    f: FoundFile, status: str, reason: str | None, content_hash: str | None, warnings: int, **decoded: Any
) -> VideoRecord:
    """A file's catalog row: where it is and how it is recognised, its status, and what decoding learned."""
    return VideoRecord(
        path=f.path,
        size=f.size,
        mtime_ns=f.mtime_ns,
        dev=f.dev,
        inode=f.inode,
        status=status,
        reason=reason,
        content_hash=content_hash,
        warnings=warnings,
        **decoded,
    )


def _note(done: FileDone) -> str | None:
    """The reason column of an indexed file: which decoder failed first, and the first decoder warnings."""
    parts = list(done.summary.notes) if done.summary else []
    if done.warnings:
        first = f": {done.log[0]}" if done.log else ""
        parts.append(f"{done.warnings} decoder warning(s){first}")
    return "; ".join(parts) or None
