"""The decode -> encode -> commit loop of an indexing run.

Decode workers stream segments (cropped uint8 frames) through the pool while this thread runs the model:
segments from any number of files fill one model batch, so decoding, inference and writing overlap. A file is
committed once its last segment is encoded, and the queued files become a published generation every
`commit_every` segments or `commit_seconds` seconds, whichever comes first: an interruption loses at most that
much work, and the next run resumes from what was committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from xclip_search.checkpoint import Checkpoint
from xclip_search.encoder import XClipEncoder
from xclip_search.store.catalog import FAILED
from xclip_search.store.fsio import crash_point
from xclip_search.store.writer import IndexWriter

from .extract import CropNormalizer, ExtractSpec
from .pool import FileDone, FileFailed, PoolEvent, SegmentReady
from .protocol import LOST_SEGMENTS
from .records import FileOutcome, SegmentIds, indexed_outcome, indexed_record, record_failure
from .segments import SegmentPlan
from .walk import FoundFile


@dataclass(frozen=True)
class IngestSettings:
    """The knobs of the loop (resolved from `IndexOptions`)."""

    batch_size: int
    commit_every: int
    commit_seconds: float


@dataclass
class _Pending:
    """A file whose segments are being decoded and encoded (the segments of its current decoder attempt)."""

    found: FoundFile
    attempt: int = 0
    plans: list[SegmentPlan] = field(default_factory=list)
    v: list[np.ndarray | None] = field(default_factory=list)
    z: list[np.ndarray | None] = field(default_factory=list)
    thumbnails: list[bytes | None] = field(default_factory=list)
    done: FileDone | None = None

    @property
    def complete(self) -> bool:
        return self.done is not None and all(x is not None for x in self.v)


def ingest(
    writer: IndexWriter,
    checkpoint: Checkpoint,
    spec: ExtractSpec,
    todo: list[FoundFile],
    events: Iterator[PoolEvent],
    settings: IngestSettings,
    on_file: Callable[[FileOutcome], None],
    on_segments: Callable[[int], None],
) -> None:
    """Encode and commit every file in `todo` from the pool's `events`; reports each file once via `on_file`."""
    encoder = XClipEncoder(checkpoint)
    to_pixels = CropNormalizer(spec.pixels)
    by_path = {f.path: f for f in todo}
    pending: dict[str, _Pending] = {}
    queue: list[tuple[_Pending, int, np.ndarray]] = []  # (file, segment slot, crops) waiting for a model batch
    last_flush = time.monotonic()

    def maybe_flush() -> None:
        nonlocal last_flush
        due = time.monotonic() - last_flush >= settings.commit_seconds
        if writer.pending_segments >= settings.commit_every or (due and writer.pending):
            writer.flush()
            last_flush = time.monotonic()

    ids = SegmentIds(writer, settings.commit_every)

    def commit(p: _Pending) -> None:
        del pending[p.found.path]
        done = p.done
        assert done is not None and done.summary is not None
        if len(p.plans) != done.summary.segments:  # cannot happen unless the protocol is broken; never store it
            on_file(record_failure(writer, p.found, FileFailed(p.found.path, FAILED, LOST_SEGMENTS)))
            return
        video = indexed_record(p.found, done)
        v, z = np.stack(p.v), np.stack(p.z)  # type: ignore[arg-type]
        writer.add(video, ids.records(p.plans), v, z, thumbnails=p.thumbnails)
        on_file(indexed_outcome(video, len(p.plans)))
        maybe_flush()

    def run_batch(items: list[tuple[_Pending, int, np.ndarray]]) -> None:
        pixels = to_pixels(np.stack([crops for _, _, crops in items]))
        emb = encoder.encode_videos(pixels)
        crash_point("batch-encoded")
        on_segments(len(items))
        touched: list[_Pending] = []
        for row, (p, slot, _) in enumerate(items):
            p.v[slot] = emb.v[row]
            p.z[slot] = emb.z[row]
            if p not in touched:
                touched.append(p)
        for p in touched:
            if p.complete and pending.get(p.found.path) is p:
                commit(p)

    for event in events:
        if isinstance(event, SegmentReady):
            p = pending.get(event.path)
            if p is None or event.attempt > p.attempt:
                if p is not None:  # the worker switched decoders midway: start this file over
                    queue = [item for item in queue if item[0] is not p]
                p = pending[event.path] = _Pending(by_path[event.path], attempt=event.attempt)
            elif event.attempt < p.attempt:
                continue
            p.plans.append(event.plan)
            p.v.append(None)
            p.z.append(None)
            p.thumbnails.append(event.thumbnail)
            queue.append((p, len(p.plans) - 1, event.crops))
            while len(queue) >= settings.batch_size:
                batch, queue = queue[: settings.batch_size], queue[settings.batch_size :]
                run_batch(batch)
        elif isinstance(event, FileDone):
            p = pending.get(event.path) or pending.setdefault(event.path, _Pending(by_path[event.path]))
            p.done = event
            if p.complete:
                commit(p)
        else:
            stale = pending.pop(event.path, None)
            if stale is not None:
                queue = [item for item in queue if item[0] is not stale]
            on_file(record_failure(writer, by_path[event.path], event))
            maybe_flush()
    while queue:
        batch, queue = queue[: settings.batch_size], queue[settings.batch_size :]
        run_batch(batch)
