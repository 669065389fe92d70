"""The server's thumbnails: stored ones first, else decoded on demand in isolated workers and cached.

Stored thumbnails are read from the index (`Index`'s `stored_thumbnail`). An index without them (built before
thumbnails existed, or a row whose frame failed to encode) gets one decoded on demand: in the indexer's decode
workers (`indexer.framejobs`), never in the server process, so a hostile file costs at most a worker (killed
after its timeout, capped in memory) and a 404. The path comes from the catalog, never from the request, and
must pass the server's indexed-roots guard. Results (a JPEG or "none") are kept in a bounded in-memory cache;
segment ids are never reused, so a cached thumbnail can never belong to another segment.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ..index import SegmentRow, row_frame, stored_thumbnail


class FrameDecoder(Protocol):
    def thumbnail(self, path: str, frame: int, fps: float | None) -> bytes | None: ...

    def close(self) -> None: ...


class ThumbnailSource:
    """Thumbnails for one index (thread-safe). `allow_path` maps a catalog path to the one to open (or None:
    refused); `decoder` decodes a frame to a JPEG (default: `indexer.framejobs.FrameJobs`, started lazily);
    `max_cached` bounds the cache (about 10 KB per entry at the default size)."""

    def __init__(
        self,
        index_dir: Path,
        num_frames: int,
        *,
        allow_path: Callable[[str], str | None] | None = None,
        decoder: FrameDecoder | None = None,
        max_cached: int = 4096,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.num_frames = num_frames
        self.allow_path = allow_path
        self.max_cached = max_cached
        self._decoder = decoder
        self._cache: OrderedDict[int, bytes | None] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def decoder(self) -> FrameDecoder:
        with self._lock:
            if self._decoder is None:
                from indexer.framejobs import FrameJobs

                self._decoder = FrameJobs()
            return self._decoder

    def get(self, row: SegmentRow) -> tuple[bytes | None, str]:
        """(JPEG or None, source) for a catalog segment (its shard row, path and frame range);
        source is ``stored``, ``cached``, ``decoded`` or ``missing``."""
        stored = stored_thumbnail(self.index_dir, row)
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
        path: str | None = row.path
        if self.allow_path is not None and path is not None:
            path = self.allow_path(path)
        if path is None:
            return None
        frame, fps = row_frame(row, self.num_frames)
        return self.decoder.thumbnail(path, frame, fps)

    def close(self) -> None:
        with self._lock:
            decoder, self._decoder = self._decoder, None
        if decoder is not None:
            decoder.close()
