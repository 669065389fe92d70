"""Thumbnails: one small JPEG per segment, made from the frame X-CLIP already decoded for it.

**Which frame.** The middle one of the segment's sampled frames (`representative_frame_index`): the indexer
decodes exactly these frames to embed the segment, so a thumbnail costs one JPEG encode and no extra decoding.
The indexer stores them per vector shard (`store.thumbshards`, under the shard's commit protocol).

**On demand.** An index built before thumbnails existed (or a row whose frame failed to encode) has none; then
the frame is decoded with PyAV (`decode_thumbnail`). The server does that in the indexer's isolated decode
workers (`indexer.framejobs`, with their time and memory limits; see `serve.thumbnails`), never in its own
process; `thumbnail` and `backfill_thumbnails` below are conveniences for scripts and maintenance that decode
in the calling process.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import VideoError
from .sampling import sample_frame_indices

if TYPE_CHECKING:
    from .store.catalog import Catalog, SegmentRow

# The store (and SQLAlchemy, a quarter of a CPU second to import) is imported by the functions that read an
# index, not here: decode workers import this module for `make_thumbnail` at every start.

MAX_SIDE = 256
QUALITY = 80


# -- making ------------------------------------------------------------------------------------------------


def make_thumbnail(frame: np.ndarray, *, max_side: int = MAX_SIDE, quality: int = QUALITY) -> bytes:
    """A JPEG of one RGB frame ``(H, W, 3)`` uint8, scaled so its longest side is at most `max_side`."""
    from PIL import Image

    array = np.asarray(frame)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"expected an RGB frame (H, W, 3), got shape {array.shape}")
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()


def thumbnail_or_none(frame: np.ndarray) -> bytes | None:
    """`make_thumbnail`, or None when it fails: a thumbnail is never a reason to lose a segment."""
    try:
        return make_thumbnail(frame)
    except (ValueError, OSError):
        return None


def representative_frame_index(frame_start: int, frame_end: int, num_frames: int) -> int:
    """The frame a segment's thumbnail shows: the middle of the `num_frames` frames X-CLIP samples from it."""
    indices = sample_frame_indices(frame_start, frame_end, num_frames)
    return indices[len(indices) // 2]


# -- decoding on demand ------------------------------------------------------------------------------------


def decode_frame(path: str, frame_index: int, fps: float | None) -> np.ndarray:
    """One RGB frame of a video, by index, with PyAV (seek to the nearest key frame, then decode forward).

    Exact frame accuracy is not needed for a thumbnail; the seek lands on the frame whose timestamp is nearest
    ``frame_index / fps``. Raises `VideoError` when the file cannot be read.
    """
    import av

    rate = float(fps) if fps and fps > 0 else 25.0
    target = max(0.0, frame_index / rate)
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoError("no video stream")
            stream = container.streams.video[0]
            best: Any = None
            if stream.time_base is not None and target > 0:
                container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                best = frame
                if frame.time is None or frame.time + 0.5 / rate >= target:
                    break
            if best is None:
                raise VideoError("no video frames")
            return np.asarray(best.to_ndarray(format="rgb24"), dtype=np.uint8)
    except VideoError:
        raise
    except Exception as exc:  # av.error.FFmpegError and friends
        first = str(exc).strip().splitlines()
        raise VideoError(f"PyAV cannot decode a thumbnail frame: {first[0] if first else type(exc).__name__}") from exc


def decode_thumbnail(path: str, frame_index: int, fps: float | None) -> bytes:
    """The JPEG of one frame of a video (what a decode worker runs for the server). Raises `VideoError`."""
    try:
        return make_thumbnail(decode_frame(path, frame_index, fps))
    except ValueError as exc:
        raise VideoError(f"cannot make a thumbnail: {exc}") from exc


def row_frame(row: SegmentRow, num_frames: int) -> tuple[int, float | None]:
    """(frame index, frame rate) of a catalog segment's thumbnail frame."""
    index = representative_frame_index(row.frame_start, row.frame_end, num_frames)
    return index, _row_fps(row)


def _decode_row(row: SegmentRow, num_frames: int) -> bytes | None:
    """A segment's thumbnail decoded in this process, or None when its video cannot be read."""
    index, fps = row_frame(row, num_frames)
    try:
        return decode_thumbnail(row.path, index, fps)
    except (VideoError, OSError):
        return None


def _row_fps(row: SegmentRow) -> float | None:
    """The frame rate of a segment's video: recorded, else implied by its frame range and times."""
    if row.fps:
        return float(row.fps)
    return row.frame_end / row.end_s if row.end_s > 0 and row.frame_end > 0 else None


def thumbnail(
    index_dir: str | os.PathLike[str],
    segment_id: int,
    *,
    catalog: Catalog | None = None,
    generation: int | None = None,
    decode_missing: bool = True,
) -> bytes | None:
    """The JPEG thumbnail of a segment visible in the published generation (or `generation`), or None.

    A convenience for scripts and tests (it opens the catalog and reads the manifest per call, and decodes in
    this process); the server keeps one `serve.thumbnails.ThumbnailSource` and a pinned snapshot instead.
    """
    from .store.catalog import Catalog
    from .store.manifest import read_manifest
    from .store.thumbshards import read_stored

    directory = Path(index_dir)
    manifest = read_manifest(directory)
    cat = catalog or Catalog.open(directory)
    try:
        row = cat.segment(int(segment_id), manifest.generation if generation is None else generation)
    finally:
        if catalog is None:
            cat.close()
    if row is None:
        return None
    stored = read_stored(directory, row.shard, row.row)
    if stored is not None or not decode_missing:
        return stored
    return _decode_row(row, manifest.model.num_frames)


def backfill_thumbnails(index_dir: str | os.PathLike[str]) -> int:
    """Write stored thumbnails for the shards of an existing index that have none; returns shards written.

    Holds the writer lock (an indexing run must not garbage-collect meanwhile) and decodes each segment's
    representative frame. Thumbnail files never change what a search returns, so they can be added later.
    """
    from .store.catalog import Catalog
    from .store.fsio import writer_lock
    from .store.manifest import read_manifest
    from .store.thumbshards import thumbnail_paths, write_thumbnail_shard

    directory = Path(index_dir)
    written = 0
    with writer_lock(directory, wait=True):
        manifest = read_manifest(directory)
        catalog = Catalog.open(directory)
        try:
            for shard in manifest.shards:
                if thumbnail_paths(directory, shard.name)[1].exists():
                    continue
                thumbs: list[bytes | None] = [None] * shard.count
                for r in catalog.shard_segments(shard.name):
                    if 0 <= r.row < shard.count:
                        thumbs[r.row] = _decode_row(r, manifest.model.num_frames)
                write_thumbnail_shard(directory, shard.name, thumbs)
                written += 1
        finally:
            catalog.close()
    return written
