"""Vector data: immutable shards of ``ids``, ``v`` and ``Z`` as plain ``.npy`` files, read by memory map.

``.npy`` is a documented, pickle-free format (loaded with ``allow_pickle=False``) that every array tool reads,
and a memory map lets a search touch only the rows of its candidates, so an index larger than RAM still
answers quickly. Shards are written once under a unique name and never modified; replacing or pruning a video
retires its segments in the catalog, and the vectors stay until a compaction rewrites the shards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import IndexCorruptError
from .fsio import atomic_write, fsync_dir, remove_stale_temporaries
from .manifest import ShardInfo

VECTORS_DIR = "vectors"
PARTS = ("ids", "v", "z")
Z_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class Shard:
    """A shard opened by memory map."""

    info: ShardInfo
    ids: np.ndarray
    v: np.ndarray
    z: np.ndarray


class VectorStore:
    """The ``vectors/`` directory of an index."""

    def __init__(self, index_dir: Path) -> None:
        self.root = index_dir / VECTORS_DIR

    def path(self, name: str, part: str) -> Path:
        return self.root / f"{name}.{part}.npy"

    def write_shard(
        self, generation: int, ids: np.ndarray, v: np.ndarray, z: np.ndarray, *, z_dtype: str = "float32"
    ) -> ShardInfo:
        """Write a new shard durably and return its description (with checksums) for the catalog/manifest."""
        if z_dtype not in Z_DTYPES:
            raise ValueError(f"Invalid z_dtype ({z_dtype}). Supported values are {', '.join(Z_DTYPES)}.")
        n = len(ids)
        if v.shape[0] != n or z.shape[0] != n:
            raise ValueError("ids, v and z must have the same number of rows")
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"{generation:08d}-{uuid.uuid4().hex[:8]}"
        arrays: dict[str, np.ndarray] = {
            "ids": np.ascontiguousarray(ids, dtype=np.int64),
            "v": np.ascontiguousarray(v, dtype=np.float32),
            "z": np.ascontiguousarray(z, dtype=np.dtype(z_dtype)),
        }
        sums = {part: _write_array(self.path(name, part), arr) for part, arr in arrays.items()}
        fsync_dir(self.root)
        return ShardInfo(name=name, count=n, generation=generation, sha256=sums, z_dtype=z_dtype)

    def open_shard(self, info: ShardInfo) -> Shard:
        """Memory-map a shard, checking that its files exist and have the recorded shapes."""
        try:
            ids = np.load(self.path(info.name, "ids"), mmap_mode="r", allow_pickle=False)
            v = np.load(self.path(info.name, "v"), mmap_mode="r", allow_pickle=False)
            z = np.load(self.path(info.name, "z"), mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise IndexCorruptError(
                f"Vector shard {info.name} is missing or damaged: {exc}",
                hint="Run 'xclip-search index' again on the same folders to re-encode the affected videos.",
            ) from exc
        if not (len(ids) == v.shape[0] == z.shape[0] == info.count):
            raise IndexCorruptError(f"Vector shard {info.name} holds {len(ids)} rows; the manifest says {info.count}")
        return Shard(info=info, ids=ids, v=v, z=z)

    def remove_unreferenced(self, referenced: set[str]) -> int:
        """Delete shard files no catalog row refers to (left by a run that crashed before its commit)."""
        if not self.root.is_dir():
            return 0
        removed = remove_stale_temporaries(self.root)
        for entry in self.root.glob("*.npy"):
            name = entry.name.split(".", 1)[0]
            if name not in referenced:
                entry.unlink(missing_ok=True)
                removed += 1
        return removed


def _write_array(path: Path, array: np.ndarray) -> str:
    def write(f: BinaryIO) -> None:
        np.save(f, array, allow_pickle=False)

    return atomic_write(path, write, sync_dir=False)


class VectorView:
    """The vectors of one published generation: lookup of ``v``/``Z`` rows by segment id across shards."""

    def __init__(self, store: VectorStore, shard_infos: Sequence[ShardInfo]) -> None:
        self.shards = [store.open_shard(info) for info in shard_infos]
        if self.shards:
            all_ids = np.concatenate([np.asarray(s.ids) for s in self.shards])
            where = np.concatenate([np.full(len(s.ids), i, dtype=np.int32) for i, s in enumerate(self.shards)])
            rows = np.concatenate([np.arange(len(s.ids), dtype=np.int64) for s in self.shards])
        else:
            all_ids = np.zeros(0, np.int64)
            where = np.zeros(0, np.int32)
            rows = np.zeros(0, np.int64)
        order = np.argsort(all_ids, kind="stable")
        self._ids = all_ids[order]
        self._shard = where[order]
        self._row = rows[order]

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def dim(self) -> int:
        return int(self.shards[0].v.shape[1]) if self.shards else 0

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, row) for each id; raises if an id is not in this generation's shards."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self._ids, ids)
        pos = np.minimum(pos, max(len(self._ids) - 1, 0))
        if len(self._ids) == 0 or not np.array_equal(self._ids[pos], ids):
            raise KeyError("segment id not in the published vector data")
        return self._shard[pos], self._row[pos]

    def gather(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``v`` (n, D) and ``Z`` (n, N, D) as float32 for the given segment ids, in the given order."""
        shard_idx, rows = self.locate(ids)
        n = len(rows)
        if n == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, 0, self.dim), np.float32)
        first = self.shards[int(shard_idx[0])]
        v = np.empty((n, first.v.shape[1]), np.float32)
        z = np.empty((n, *first.z.shape[1:]), np.float32)
        for s in np.unique(shard_idx):
            sel = np.nonzero(shard_idx == s)[0]
            shard = self.shards[int(s)]
            # Sorted row order reads the memory map front to back.
            order = np.argsort(rows[sel])
            picked = rows[sel][order]
            v[sel[order]] = shard.v[picked]
            z[sel[order]] = shard.z[picked]
        return v, z

    def gather_v(self, ids: np.ndarray) -> np.ndarray:
        """``v`` (n, D) float32 for the given segment ids, without touching ``Z`` (first-stage refinement)."""
        shard_idx, rows = self.locate(ids)
        v = np.empty((len(rows), self.dim), np.float32)
        for s in np.unique(shard_idx):
            sel = np.nonzero(shard_idx == s)[0]
            order = np.argsort(rows[sel])
            v[sel[order]] = self.shards[int(s)].v[rows[sel][order]]
        return v

    def prefetch_z(self, ids: np.ndarray) -> None:
        """Ask the kernel to start reading the ``Z`` rows of `ids` (asynchronously, all at once).

        A rerank reads C scattered rows of ~50-100 KB; faulting them in one by one through the memory map costs
        one disk round trip each, while this queues them together. A no-op where posix_fadvise is missing.
        """
        advise = getattr(os, "posix_fadvise", None)
        if advise is None or len(ids) == 0:
            return
        try:
            shard_idx, rows = self.locate(ids)
        except KeyError:
            return
        for s in np.unique(shard_idx):
            z = self.shards[int(s)].z
            filename = getattr(z, "filename", None)
            if filename is None:
                continue
            row_bytes = int(np.prod(z.shape[1:])) * z.dtype.itemsize
            offset = int(getattr(z, "offset", 0))
            try:
                fd = os.open(filename, os.O_RDONLY)
            except OSError:
                continue
            try:
                for r in np.sort(rows[shard_idx == s]).tolist():
                    advise(fd, offset + r * row_bytes, row_bytes, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)

    def iter_shards(self) -> Iterator[Shard]:
        yield from self.shards
