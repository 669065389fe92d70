"""Recognising a file again: by its stat fields first, by a sampled content hash where the stat fields disagree.

A re-run must not decode an unchanged library again, so the first test is ``(size, mtime_ns)`` (and the inode,
when recorded): free, since the walk already has them. When they disagree without proving a change (a file
``touch``-ed, copied with its timestamps, moved to another filesystem, restored from a backup), the content
hash decides. Hashing whole videos would cost as much reading as decoding them, so the hash reads 16 blocks of
16 KiB spread evenly over the file, plus its size: 256 KiB per file whatever its length. A video edited in
place without changing its size or any sampled block would be missed; re-encoding changes every block.
"""

from __future__ import annotations

import hashlib
import os

HASH_SCHEME = "s16x16k"
_BLOCKS = 16
_BLOCK = 16 * 1024


def content_hash(path: str) -> str:
    """``s16x16k:<sha256>`` of the file's size and 16 evenly spaced 16 KiB blocks (the whole file if small)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(size.to_bytes(8, "little"))
        if size <= _BLOCKS * _BLOCK:
            while block := f.read(1 << 20):
                h.update(block)
        else:
            step = (size - _BLOCK) / (_BLOCKS - 1)
            for k in range(_BLOCKS):
                f.seek(int(k * step))
                h.update(f.read(_BLOCK))
    return f"{HASH_SCHEME}:{h.hexdigest()}"
