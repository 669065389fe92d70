"""Thumbnails: one small JPEG per segment, made from the frame X-CLIP already decoded for it.

**Which frame.** The middle one of the segment's sampled frames (`representative_frame_index`): the indexer
decodes exactly these frames to embed the segment, so a thumbnail costs one JPEG encode and no extra decoding.

**Storage layout** (inside the index directory)::

    thumbnails/<shard>.jpgs        the JPEG bytes of every row of vector shard <shard>, concatenated
    thumbnails/<shard>.offsets.npy int64 (count + 1,): row i is bytes [offsets[i], offsets[i+1]); empty = none

One immutable pair per vector shard, named after the shard, rather than one file per segment, because:

- it follows the shard's commit protocol exactly: the pair is published (temp name, fsync, rename) next to the
  shard *before* the catalog commit, so a committed segment's thumbnail is either complete or absent, never
  half-written; a crash before the commit leaves an unreferenced pair that the writer's garbage collection
  removes by the same rule as the shard (`remove_unreferenced` with the catalog's shard names);
- a batch of 256 segments costs two fsyncs instead of 256, and a library of a million segments holds a few
  thousand files instead of a million (inodes, directory scans, backups);
- lookup needs nothing new in the catalog: a segment row already records its ``shard`` and ``row``.

``.jpgs`` is written before ``.offsets.npy``; a reader trusts a pair only when the offsets file exists, is
monotonic and ends exactly at the size of the ``.jpgs`` file. Anything else reads as "no stored thumbnail".

**Fallback.** An index built before thumbnails existed (or a row whose frame failed to encode) has none; then
`ThumbnailSource` decodes the segment's representative frame on demand with PyAV (path from the catalog, never
from a request) and keeps the JPEG in a bounded in-memory cache. Segment ids are never reused, so a cached
thumbnail can never belong to another segment.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .sampling import sample_frame_indices
from .store.fsio import atomic_write, atomic_write_bytes, fsync_dir, remove_stale_temporaries, writer_lock

if TYPE_CHECKING:
    from .store.catalog import Catalog, SegmentRow

THUMBNAILS_DIR = "thumbnails"
MAX_SIDE = 256
QUALITY = 80
_JPGS = ".jpgs"
_OFFSETS = ".offsets.npy"


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


def representative_frame_index(frame_start: int, frame_end: int, num_frames: int) -> int:
    """The frame a segment's thumbnail shows: the middle of the `num_frames` frames X-CLIP samples from it."""
    indices = sample_frame_indices(frame_start, frame_end, num_frames)
    return indices[len(indices) // 2]


# -- storing -----------------------------------------------------------------------------------------------


def thumbnail_paths(index_dir: Path, shard_name: str) -> tuple[Path, Path]:
    """(``.jpgs``, ``.offsets.npy``) of a shard."""
    root = Path(index_dir) / THUMBNAILS_DIR
    return root / f"{shard_name}{_JPGS}", root / f"{shard_name}{_OFFSETS}"


def write_thumbnail_shard(index_dir: Path, shard_name: str, thumbnails: Sequence[bytes | None]) -> None:
    """Publish the thumbnails of shard `shard_name`, one entry per shard row in row order (None = none).

    Call it after the vector shard is written and before the catalog commit (the writer's ``shard-written``
    step): both files are durable before any catalog row can point at them.
    """
    jpgs, offsets_path = thumbnail_paths(index_dir, shard_name)
    jpgs.parent.mkdir(parents=True, exist_ok=True)
    offsets = np.zeros(len(thumbnails) + 1, dtype=np.int64)
    for i, data in enumerate(thumbnails):
        offsets[i + 1] = offsets[i] + (len(data) if data else 0)
    atomic_write_bytes(jpgs, b"".join(d for d in thumbnails if d), sync_dir=False)
    atomic_write(offsets_path, lambda f: np.save(f, offsets, allow_pickle=False), sync_dir=False)
    fsync_dir(jpgs.parent)


def remove_unreferenced(index_dir: Path, referenced: set[str]) -> int:
    """Delete thumbnail files of shards the catalog does not reference and stale temporaries (writer only)."""
    root = Path(index_dir) / THUMBNAILS_DIR
    if not root.is_dir():
        return 0
    removed = remove_stale_temporaries(root)
    for entry in root.iterdir():
        if entry.name.startswith("."):
            continue
        name = entry.name.split(".", 1)[0]
        if entry.is_file() and name not in referenced:
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


def read_stored(index_dir: Path, shard_name: str, row: int) -> bytes | None:
    """The stored JPEG of one shard row, or None when the shard has no (valid) thumbnails or the row none."""
    jpgs, offsets_path = thumbnail_paths(index_dir, shard_name)
    try:
        offsets = np.load(offsets_path, allow_pickle=False)
        size = jpgs.stat().st_size
    except (OSError, ValueError):
        return None
    if (
        offsets.ndim != 1
        or offsets.dtype.kind != "i"
        or not 0 <= row < len(offsets) - 1
        or int(offsets[0]) != 0
        or int(offsets[-1]) != size
        or bool(np.any(np.diff(offsets) < 0))
    ):
        return None
    start, end = int(offsets[row]), int(offsets[row + 1])
    if end == start:
        return None
    with open(jpgs, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    return data if len(data) == end - start else None


# -- decoding on demand ------------------------------------------------------------------------------------


def decode_frame(path: str, frame_index: int, fps: float | None) -> np.ndarray:
    """One RGB frame of a video, by index, with PyAV (seek to the nearest key frame, then decode forward).

    Exact frame accuracy is not needed for a thumbnail; the seek lands on the frame whose timestamp is nearest
    ``frame_index / fps``. Raises `VideoError` when the file cannot be read.
    """
    import av

    from .errors import VideoError

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


class ThumbnailSource:
    """Thumbnails for one index: stored ones first, else decoded on demand and cached (bounded, thread-safe).

    `allow_path` decides whether a catalog path may be opened for decoding (the server passes its indexed-roots
    guard); `max_cached` bounds the in-memory cache (about 10 KB per entry at the default size).
    """

    def __init__(
        self,
        index_dir: Path,
        num_frames: int,
        *,
        allow_path: Callable[[str], str | None] | None = None,
        max_cached: int = 4096,
        max_parallel_decodes: int = 2,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.num_frames = num_frames
        self.allow_path = allow_path
        self.max_cached = max_cached
        self._cache: OrderedDict[int, bytes | None] = OrderedDict()
        self._lock = threading.Lock()
        self._decodes = threading.BoundedSemaphore(max_parallel_decodes)

    def get(self, row: SegmentRow) -> tuple[bytes | None, str]:
        """(JPEG or None, source) for a catalog segment (its shard row, path and frame range);
        source is ``stored``, ``cached``, ``decoded`` or ``missing``."""
        stored = read_stored(self.index_dir, row.shard, row.row)
        if stored is not None:
            return stored, "stored"
        segment_id = row.id
        with self._lock:
            if segment_id in self._cache:
                self._cache.move_to_end(segment_id)
                hit = self._cache[segment_id]
                return hit, "cached" if hit is not None else "missing"
        data = self._decode(row)
        with self._lock:
            self._cache[segment_id] = data
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return data, "decoded" if data is not None else "missing"

    def _decode(self, row: SegmentRow) -> bytes | None:
        from .errors import VideoError

        path: str | None = row.path
        if self.allow_path is not None and path is not None:
            path = self.allow_path(path)
        if path is None:
            return None
        index = representative_frame_index(row.frame_start, row.frame_end, self.num_frames)
        with self._decodes:
            try:
                return make_thumbnail(decode_frame(path, index, _row_fps(row)))
            except (VideoError, ValueError, OSError):
                return None


def _row_fps(row: SegmentRow) -> float | None:
    """The frame rate of a segment's video: recorded, else implied by its frame range and times."""
    if row.fps:
        return float(row.fps)
    end_s, frame_end = row.end_s, row.frame_end
    return frame_end / end_s if end_s > 0 and frame_end > 0 else None


def thumbnail(
    index_dir: str | os.PathLike[str],
    segment_id: int,
    *,
    catalog: Catalog | None = None,
    generation: int | None = None,
    decode_missing: bool = True,
) -> bytes | None:
    """The JPEG thumbnail of a segment visible in the published generation (or `generation`), or None.

    A convenience for scripts and tests (it opens the catalog and reads the manifest per call); the server keeps
    one `ThumbnailSource` and a pinned snapshot instead.
    """
    from .store.catalog import Catalog
    from .store.manifest import read_manifest

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
    data, _ = ThumbnailSource(directory, manifest.model.num_frames).get(row)
    return data


def backfill_thumbnails(index_dir: str | os.PathLike[str]) -> int:
    """Write stored thumbnails for the shards of an existing index that have none; returns shards written.

    Holds the writer lock (an indexing run must not garbage-collect meanwhile) and decodes each segment's
    representative frame. Thumbnail files never change what a search returns, so they can be added later.
    """
    from .store.catalog import Catalog
    from .store.manifest import read_manifest

    directory = Path(index_dir)
    written = 0
    with writer_lock(directory, wait=True):
        manifest = read_manifest(directory)
        catalog = Catalog.open(directory)
        try:
            source = ThumbnailSource(directory, manifest.model.num_frames, max_cached=0)
            for shard in manifest.shards:
                if thumbnail_paths(directory, shard.name)[1].exists():
                    continue
                rows = catalog.shard_segments(shard.name)
                thumbs: list[bytes | None] = [None] * shard.count
                for r in rows:
                    if 0 <= r.row < shard.count:
                        thumbs[r.row] = source._decode(r)
                write_thumbnail_shard(directory, shard.name, thumbs)
                written += 1
        finally:
            catalog.close()
    return written
