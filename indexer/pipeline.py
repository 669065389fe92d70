"""The indexing run: walk -> classify against the catalog -> decode (workers) -> encode (batched) -> commit.

Decoding happens in worker processes while this process runs the model, so the two overlap. Segments from
several videos share one model batch; a video is committed once all of its segments are encoded, and every
`commit_every` segments the queued videos become a new published generation, so an interruption loses at most
the batch in flight and the next run resumes where this one stopped. Every file the walk sees ends with exactly
one status in the report.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from xclip_search.checkpoint import DEFAULT_MODEL, Checkpoint, load_checkpoint
from xclip_search.encoder import XClipEncoder
from xclip_search.errors import InvalidArgumentError
from xclip_search.store.catalog import FAILED, INDEXED, SKIPPED, SegmentRecord, VideoRecord
from xclip_search.store.manifest import MANIFEST_NAME, read_manifest
from xclip_search.store.writer import IndexWriter, check_model

from .extract import Extracted, ExtractSpec
from .probe import Limits
from .segments import DEFAULT_MAX_SEGMENTS, DEFAULT_SEGMENT_SECONDS
from .walk import FoundFile, WalkIssue, walk
from .workers import DecodePool


@dataclass
class IndexOptions:
    """Knobs of an indexing run; the defaults suit a laptop and are chosen from the machine where noted."""

    segment_seconds: float = DEFAULT_SEGMENT_SECONDS
    max_segments: int = DEFAULT_MAX_SEGMENTS
    workers: int | None = None
    batch_size: int = 8
    commit_every: int = 256
    prune: bool = False
    retry_failed: bool = False
    device: str | None = None
    dtype: str | None = None
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class FileOutcome:
    path: str
    status: str
    reason: str | None = None
    segments: int = 0


@dataclass
class IndexReport:
    """What a run did; `to_dict` is the ``index --json`` shape (DESIGN.md §4, plus ``skipped``)."""

    outcomes: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def segments(self) -> int:
        return sum(o.segments for o in self.outcomes)

    @property
    def failures(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status in (FAILED, SKIPPED)]

    @property
    def exit_code(self) -> int:
        return 3 if self.count(FAILED) else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "indexed": self.count(INDEXED),
            "unchanged": self.count("unchanged"),
            "failed": self.count(FAILED),
            "removed": self.count("removed"),
            "segments": self.segments,
            "skipped": self.count(SKIPPED),
        }


class Progress(Protocol):
    """Receives progress events; the command line draws bars from them, the library passes none."""

    def start(self, total_files: int) -> None: ...

    def file_done(self, outcome: FileOutcome) -> None: ...

    def segments_encoded(self, count: int) -> None: ...


class _NoProgress:
    def start(self, total_files: int) -> None:
        pass

    def file_done(self, outcome: FileOutcome) -> None:
        pass

    def segments_encoded(self, count: int) -> None:
        pass


def run_index(
    paths: Sequence[str | os.PathLike[str]],
    index_dir: str | os.PathLike[str],
    *,
    model: str | None = None,
    options: IndexOptions | None = None,
    progress: Progress | None = None,
) -> IndexReport:
    """Index the videos under `paths` into `index_dir` (created if needed) and return what happened."""
    opts = options or IndexOptions()
    prog = progress or _NoProgress()
    if not paths:
        raise InvalidArgumentError("No paths to index", hint="Pass one or more video files or folders.")
    if opts.batch_size < 1 or opts.commit_every < 1:
        raise InvalidArgumentError("batch size and commit interval must be at least 1")
    index_path = Path(index_dir).expanduser().resolve()
    started = time.monotonic()

    checkpoint: Checkpoint | None = None
    if (index_path / MANIFEST_NAME).exists():
        identity = read_manifest(index_path).model
        if model is not None:
            checkpoint = load_checkpoint(model, device=opts.device, dtype=opts.dtype)
            check_model(identity, checkpoint.identity, index_path)
    else:
        checkpoint = load_checkpoint(model or DEFAULT_MODEL, device=opts.device, dtype=opts.dtype)
        identity = checkpoint.identity

    report = IndexReport()
    with IndexWriter(index_path, identity) as writer:
        writer.run_id = writer.catalog.start_run([os.fspath(p) for p in paths])
        status = "interrupted"
        try:
            todo = _classify(writer, paths, opts, report, prog)
            if todo:
                if checkpoint is None:
                    checkpoint = load_checkpoint(identity.source, revision=identity.revision, device=opts.device)
                    check_model(identity, checkpoint.identity, index_path)
                _encode_all(writer, checkpoint, todo, opts, report, prog)
            writer.flush()
            if writer.changed or (writer.manifest.ann is None and writer.manifest.shards):
                writer.publish_ann()
            status = "finished"
        except KeyboardInterrupt:
            writer.flush()  # keep every video that was completely encoded
            raise
        finally:
            writer.catalog.finish_run(writer.run_id, status, report.to_dict())
    report.seconds = time.monotonic() - started
    return report


def _classify(
    writer: IndexWriter,
    paths: Sequence[str | os.PathLike[str]],
    opts: IndexOptions,
    report: IndexReport,
    prog: Progress,
) -> list[FoundFile]:
    """Decide per file: unchanged, to (re)index, or an issue to record. Queues removals when pruning."""
    found: list[FoundFile | WalkIssue] = list(walk(paths))
    known = writer.catalog.videos_by_path([f.path for f in found])
    prog.start(len(found))
    todo: list[FoundFile] = []
    for item in found:
        if isinstance(item, WalkIssue):
            outcome = FileOutcome(item.path, item.status, item.reason)
            if os.path.lexists(item.path):
                writer.record(VideoRecord(path=item.path, size=0, mtime_ns=0, status=item.status, reason=item.reason))
            report.outcomes.append(outcome)
            prog.file_done(outcome)
            continue
        row = known.get(item.path)
        same = row is not None and row["size"] == item.size and row["mtime_ns"] == item.mtime_ns
        settled = (
            same
            and row is not None
            and (row["status"] == INDEXED or (row["status"] in (FAILED, SKIPPED) and not opts.retry_failed))
        )
        if settled:
            outcome = FileOutcome(item.path, "unchanged")
            report.outcomes.append(outcome)
            prog.file_done(outcome)
        else:
            todo.append(item)
    if opts.prune:
        _prune(writer, paths, {f.path for f in found}, report, prog)
    return todo


def _prune(
    writer: IndexWriter,
    roots: Sequence[str | os.PathLike[str]],
    seen: set[str],
    report: IndexReport,
    prog: Progress,
) -> None:
    """Retire catalog videos under the walked roots whose files are gone."""
    prefixes = [os.path.abspath(os.fspath(r)) for r in roots]
    gone = []
    for path, row in writer.catalog.videos_by_path().items():
        if row["status"] == "removed" or path in seen:
            continue
        inside = any(path == p or path.startswith(p.rstrip(os.sep) + os.sep) for p in prefixes)
        if inside and not os.path.lexists(path):
            gone.append(path)
    writer.remove(gone)
    for path in gone:
        outcome = FileOutcome(path, "removed")
        report.outcomes.append(outcome)
        prog.file_done(outcome)


@dataclass
class _Pending:
    """A decoded video whose segments are being encoded."""

    found: FoundFile
    extracted: Extracted
    v: list[np.ndarray | None]
    z: list[np.ndarray | None]
    remaining: int


def _encode_all(
    writer: IndexWriter,
    checkpoint: Checkpoint,
    todo: list[FoundFile],
    opts: IndexOptions,
    report: IndexReport,
    prog: Progress,
) -> None:
    encoder = XClipEncoder(checkpoint)
    spec = ExtractSpec(
        num_frames=checkpoint.num_frames,
        pixels=checkpoint.pixels,
        segment_seconds=opts.segment_seconds,
        max_segments=opts.max_segments,
        limits=opts.limits,
    )
    by_path = {f.path: f for f in todo}
    queue: list[tuple[_Pending, int]] = []  # (video, segment index) waiting for a model batch

    def run_batch(items: list[tuple[_Pending, int]]) -> None:
        pixels = np.stack([p.extracted.pixels[i] for p, i in items])
        emb = encoder.encode_videos(pixels)
        prog.segments_encoded(len(items))
        for row, (pending, i) in enumerate(items):
            pending.v[i] = emb.v[row]
            pending.z[i] = emb.z[row]
            pending.remaining -= 1
            if pending.remaining == 0:
                _commit_video(writer, pending, report, prog)
                if writer.pending_segments >= opts.commit_every:
                    writer.flush()

    with DecodePool(spec, opts.workers) as pool:
        for outcome in pool.run([f.path for f in todo]):
            found = by_path[outcome.path]
            if outcome.extracted is None:
                writer.record(
                    VideoRecord(
                        path=found.path,
                        size=found.size,
                        mtime_ns=found.mtime_ns,
                        status=FAILED,
                        reason=outcome.error,
                    )
                )
                result = FileOutcome(found.path, FAILED, outcome.error)
                report.outcomes.append(result)
                prog.file_done(result)
                continue
            ext = outcome.extracted
            n = len(ext.segments)
            pending = _Pending(found, ext, [None] * n, [None] * n, n)
            queue.extend((pending, i) for i in range(n))
            while len(queue) >= opts.batch_size:
                batch, queue = queue[: opts.batch_size], queue[opts.batch_size :]
                run_batch(batch)
        while queue:
            batch, queue = queue[: opts.batch_size], queue[opts.batch_size :]
            run_batch(batch)


def _commit_video(writer: IndexWriter, pending: _Pending, report: IndexReport, prog: Progress) -> None:
    ext = pending.extracted
    first = writer.reserve_ids(len(ext.segments))
    records = [
        SegmentRecord(
            seq=p.seq,
            start_s=p.start_s,
            end_s=p.end_s,
            frame_start=p.frame_start,
            frame_end=p.frame_end,
            id=first + k,
        )
        for k, p in enumerate(ext.segments)
    ]
    video = VideoRecord(
        path=pending.found.path,
        size=pending.found.size,
        mtime_ns=pending.found.mtime_ns,
        status=INDEXED,
        duration_s=ext.duration_s,
        fps=ext.info.fps,
        num_frames=ext.info.num_frames,
        width=ext.info.width,
        height=ext.info.height,
        codec=ext.codec,
        reason=("; ".join(ext.notes) or None),
    )
    writer.add(video, records, np.stack(pending.v), np.stack(pending.z))  # type: ignore[arg-type]
    outcome = FileOutcome(pending.found.path, INDEXED, segments=len(records))
    report.outcomes.append(outcome)
    prog.file_done(outcome)
