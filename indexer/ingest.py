"""The decode -> encode -> commit loop of an indexing run.

Decode workers stream segments (cropped uint8 frames) through the pool while this thread runs the model:
segments from any number of files fill one model batch, so decoding, inference and writing overlap. A file is
committed once its last segment is encoded, and the queued files become a published generation every
`commit_every` segments or `commit_seconds` seconds, whichever comes first: an interruption loses at most that
much work, and the next run resumes from what was committed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from xclip_search.checkpoint import Checkpoint
from xclip_search.encoder import VideoEmbeddings, XClipEncoder
from xclip_search.store.catalog import FAILED
from xclip_search.store.fsio import crash_point
from xclip_search.store.writer import IndexWriter

from .extract import ExtractSpec
from .feed import ModelFeed
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
    #: on a GPU, choose the batch size from its free memory (the user gave none); `batch_size` is the floor
    gpu_batch: bool = False


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


_Item = tuple[_Pending, int, np.ndarray]  # (file, segment slot, crops) waiting for a model batch


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
    feed: ModelFeed[list[_Item]] = ModelFeed(
        XClipEncoder(checkpoint), spec.pixels, batch_size=settings.batch_size, auto_batch=settings.gpu_batch
    )
    decoders = _Decoders(writer)
    by_path = {f.path: f for f in todo}
    pending: dict[str, _Pending] = {}
    queue: list[_Item] = []
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
        decoders.note(done.summary.decoder)
        video = indexed_record(p.found, done)
        v, z = np.stack(p.v), np.stack(p.z)  # type: ignore[arg-type]
        writer.add(video, ids.records(p.plans), v, z, thumbnails=p.thumbnails, cues=done.summary.cues)
        on_file(indexed_outcome(video, len(p.plans)))
        maybe_flush()

    def run_batch(items: list[_Item]) -> None:
        # On a GPU the results come one batch later (`ModelFeed`): the next batch transfers while this one runs.
        for done_items, emb in feed.push(np.stack([crops for _, _, crops in items]), items):
            store(done_items, emb)

    def store(items: list[_Item], emb: VideoEmbeddings) -> None:
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
        for done_items, emb in feed.poll():  # a batch that finished while the pool decoded: commit its files now
            store(done_items, emb)
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
            while len(queue) >= feed.batch_size:
                batch, queue = queue[: feed.batch_size], queue[feed.batch_size :]
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
        batch, queue = queue[: feed.batch_size], queue[feed.batch_size :]
        run_batch(batch)
    for done_items, emb in feed.drain():
        store(done_items, emb)


class _Decoders:
    """Records in the catalog which decoders built the index (meta ``decoders``: a sorted JSON list), so an index
    decoded on the GPU (``nvdec``) says so; written when a decoder first builds a file in this run, not per file.

    Indexers sharing a catalog may add names at the same time: each write merges what the catalog holds just
    before it. The record is informational, so a write that fails (two first writers racing on a new row) does
    not stop the run; it is tried again with the next file.
    """

    KEY = "decoders"

    def __init__(self, writer: IndexWriter) -> None:
        self._catalog = writer.catalog
        self._written: set[str] = set()

    def note(self, name: str) -> None:
        if name in self._written:
            return
        try:
            raw = self._catalog.get_meta(self.KEY)
            names = {*(json.loads(raw) if raw else []), name}
            self._catalog.set_meta(self.KEY, json.dumps(sorted(names)))
        except Exception:  # best effort (see the class docstring)
            return
        self._written.add(name)
