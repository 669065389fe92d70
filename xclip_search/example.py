"""Query by example: a video (a file, or an indexed video and a time) as the query instead of text.

X-CLIP has no text here, so there is no prompt to generate: the ranking is the cosine of the MIT-pooled video
embeddings ``cos(v_example, v)``, the same first stage a text search uses, computed exactly for every candidate.
A file is embedded by the caller exactly as the index would embed it (`indexer.embed.embed_files`: same frames,
same pixels), so an indexed file used as an example finds its own segments at cosine 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidArgumentError, NotFoundError, VideoError

if TYPE_CHECKING:
    from .store.snapshot import Snapshot


@dataclass(frozen=True)
class Example:
    """The query vector (unit ``v``) and where it came from; `video_ids` are the source's own ids in the index."""

    v: np.ndarray
    source: dict[str, Any]
    video_ids: tuple[int, ...] = field(default=())


def _pick(
    spans: list[tuple[float, float]], v: np.ndarray, at: float | None, what: str
) -> tuple[np.ndarray, float, float]:
    """The segment containing `at` (its v), or the whole video: the normalized mean of its segments' v."""
    if at is None:
        mean = v.mean(axis=0)
        return mean / np.linalg.norm(mean), spans[0][0], spans[-1][1]
    if at < 0:
        raise InvalidArgumentError(f"Invalid time ({at}). It must be 0 or more seconds.", argument="at")
    for i, (start, end) in enumerate(spans):
        if start <= at < end or (i == len(spans) - 1 and at <= end):
            return v[i] / np.linalg.norm(v[i]), start, end
    raise InvalidArgumentError(
        f"Invalid time ({at}): {what} spans {spans[0][0]:.1f}-{spans[-1][1]:.1f} s", argument="at"
    )


def example_from_index(snapshot: Snapshot, video_id: int, at: float | None = None) -> Example:
    """An indexed video (or its segment at `at` seconds) as the example."""
    segs = snapshot.catalog.segments_of_videos([int(video_id)], snapshot.generation).get(int(video_id))
    if not segs:
        raise NotFoundError(
            f"No indexed video with id {video_id}", hint="Video ids are in the results of a search (video_id)."
        )
    ids = np.array([s.id for s in segs], dtype=np.int64)
    v = snapshot.vectors.gather_v(ids)
    spans = [(s.start_s, s.end_s) for s in segs]
    vec, start, end = _pick(spans, v, at, f"video {video_id}")
    source = {"video_id": int(video_id), "path": segs[0].path, "start": start, "end": end}
    return Example(vec, source, (int(video_id),))


def example_from_segment(snapshot: Snapshot, segment_id: int) -> Example:
    """An indexed segment (its own ``v``) as the example; its video is the source left out of the results."""
    seg = snapshot.catalog.segment(int(segment_id), snapshot.generation)
    if seg is None:
        raise NotFoundError(f"No segment with id {segment_id} in this index")
    v = snapshot.vectors.gather_v(np.array([seg.id], dtype=np.int64))[0]
    vec = v / max(float(np.linalg.norm(v)), 1e-12)
    source = {"segment_id": seg.id, "video_id": seg.video_id, "path": seg.path, "start": seg.start_s, "end": seg.end_s}
    return Example(vec, source, (seg.video_id,))


def example_from_embedding(
    path: str | Path,
    spans: list[tuple[float, float]],
    v: np.ndarray,
    *,
    at: float | None = None,
    snapshot: Snapshot | None = None,
) -> Example:
    """A freshly embedded file (its segments' spans and ``v``, from `indexer.embed.embed_files`) as the example.

    Embed with ``segment_seconds=0`` for a whole-file example, or with the index's windows and pass `at` to
    pick the segment containing that time. If the file is in `snapshot`'s index its video id is returned, so
    the search can leave the example itself out.
    """
    # The indexer stores absolute paths without resolving symlinks (indexer.walk); match that.
    resolved = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not spans:
        raise VideoError(f"The example video {resolved} has no segments")
    vec, start, end = _pick(spans, np.asarray(v, np.float32), at, resolved)
    own: tuple[int, ...] = ()
    if snapshot is not None:
        row = snapshot.catalog.video_at_path(resolved)
        if row is not None and row.status == "indexed":
            own = (row.id,)
    return Example(vec, {"video_id": own[0] if own else None, "path": resolved, "start": start, "end": end}, own)
