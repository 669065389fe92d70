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
_MAX_OPEN_FDS = 256


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
        self._fds: dict[tuple[int, str], int | None] = {}
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
        self._advise(shard_idx, rows, ("v", "z"))
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
        self._advise(shard_idx, rows, ("v",))
        v = np.empty((len(rows), self.dim), np.float32)
        for s in np.unique(shard_idx):
            sel = np.nonzero(shard_idx == s)[0]
            order = np.argsort(rows[sel])
            v[sel[order]] = self.shards[int(s)].v[rows[sel][order]]
        return v

    def prefetch_z(self, ids: np.ndarray) -> None:
        """Ask the kernel to start reading the ``Z`` rows of `ids` now, asynchronously (ids it lacks are skipped)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0 or len(self._ids) == 0:
            return
        pos = np.minimum(np.searchsorted(self._ids, ids), len(self._ids) - 1)
        known = self._ids[pos] == ids
        self._advise(self._shard[pos[known]], self._row[pos[known]], ("z",))

    def _advise(self, shard_idx: np.ndarray, rows: np.ndarray, parts: Sequence[str]) -> None:
        """posix_fadvise(WILLNEED) for the given rows: the kernel queues all their reads at once.

        Reading scattered rows through a memory map faults them in one at a time, one disk round trip each (on
        the benchmark VM: ~7 ms a cold 50 KB row of Z, 1.5 s for a rerank of 200); queued together they take
        one or two round trips. Cheap for rows already cached; a no-op where posix_fadvise is missing.
        """
        advise = getattr(os, "posix_fadvise", None)
        if advise is None or len(rows) == 0:
            return
        for s in np.unique(shard_idx):
            shard = self.shards[int(s)]
            picked = np.sort(rows[shard_idx == s])
            for part in parts:
                arr = shard.v if part == "v" else shard.z
                fd = self._fd(int(s), part, arr)
                if fd is None:
                    continue
                row_bytes = int(np.prod(arr.shape[1:])) * arr.dtype.itemsize
                offset = int(getattr(arr, "offset", 0))
                try:
                    for r in picked.tolist():
                        advise(fd, offset + r * row_bytes, row_bytes, os.POSIX_FADV_WILLNEED)
                except OSError:
                    return

    def _fd(self, shard: int, part: str, arr: np.ndarray) -> int | None:
        key = (shard, part)
        if key not in self._fds:
            while len(self._fds) >= _MAX_OPEN_FDS:  # many small shards: keep the most recently opened
                old = self._fds.pop(next(iter(self._fds)))
                if old is not None:
                    os.close(old)
            filename = getattr(arr, "filename", None)
            try:
                self._fds[key] = os.open(filename, os.O_RDONLY) if filename else None
            except OSError:
                self._fds[key] = None
        return self._fds[key]

    def close(self) -> None:
        """Close the descriptors kept for read-ahead advice (the memory maps close with the arrays)."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            if fd is not None:
                os.close(fd)

    def __del__(self) -> None:
        self.close()

    def iter_shards(self) -> Iterator[Shard]:
        yield from self.shards
