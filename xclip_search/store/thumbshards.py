"""Thumbnail shards: the JPEGs of one vector shard's rows, stored next to it under the same commit protocol.

Layout (inside the index directory)::

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
Making the JPEGs is `xclip_search.thumbnails`' business; this module only stores and reads bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .fsio import atomic_write, atomic_write_bytes, fsync_dir, remove_stale_temporaries

THUMBNAILS_DIR = "thumbnails"
_JPGS = ".jpgs"
_OFFSETS = ".offsets.npy"


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
