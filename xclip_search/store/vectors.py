"""Vector data: immutable shards of ``ids``, ``v`` and ``Z`` as plain ``.npy`` files, read by memory map.

Next to them a shard keeps ``rowhash``: for each row, a 64-bit hash of its ``v`` bytes and one of its ``Z``
bytes, each covering the row's segment id too (so a row read under another id fails, as when two ids are
swapped). `VectorView` checks those of every row it hands out before a score is computed from it; shards
scanned in full (those newer than the ANN) and shards written before row hashes existed are verified whole,
by the manifest's sha256s, once per process and file state. A failing shard is reported with its videos.

The row hash is multilinear: the row's 32-bit words times fixed odd 64-bit keys, summed modulo 2^64 (one
``einsum``, ~7 GB/s on one core where zlib's ROWHASH-32 does ~4). A change confined to one 32-bit word is always
detected; other damage escapes with a probability of at most about 2^-32 over the keys (ROWHASH-32's for random
damage). It guards against damage, not tampering: whoever can rewrite the shards can rewrite the hashes.

``.npy`` is a documented, pickle-free format (loaded with ``allow_pickle=False``) that every array tool reads,
and a memory map lets a search touch only the rows of its candidates, so an index larger than RAM still
answers quickly. Shards are written once under a unique name and never modified; replacing or pruning a video
retires its segments in the catalog, and the vectors stay until a compaction rewrites the shards.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import IndexCorruptError, ShardCorruptError
from .fsio import atomic_write, fsync_dir, remove_stale_temporaries, sha256_file
from .manifest import ShardInfo

VECTORS_DIR = "vectors"
PARTS = ("ids", "v", "z")
ROWHASH = "rowhash"  # the per-row hashes: (count, 2) uint64, columns v and Z
REPAIR_HINT = "Run 'xclip-search verify --repair' to re-embed the videos it holds from their files."
Z_DTYPES = ("float32", "float16")
_MAX_OPEN_FDS = 256


@dataclass(frozen=True)
class Shard:
    """A shard opened by memory map."""

    info: ShardInfo
    ids: np.ndarray
    v: np.ndarray
    z: np.ndarray
    rowhash: np.ndarray | None = None  # None for shards written before row hashes existed


_MASK = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 of each uint64 (wrapping arithmetic): fixed keys that no library version can change."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@functools.lru_cache(maxsize=16)
def _keys(words: int) -> np.ndarray:
    """The odd 64-bit keys of a row of `words` 32-bit words, plus two for the segment id (read-only)."""
    keys = _splitmix64(np.arange(words + 2, dtype=np.uint64)) | np.uint64(1)
    keys.flags.writeable = False
    return keys


def row_hashes(ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The 64-bit multilinear hash of each row's stored bytes and its segment id (uint64, one a row)."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    n = len(ids)
    if n == 0:
        return np.zeros(0, np.uint64)
    flat = np.ascontiguousarray(rows).reshape(n, -1).view(np.uint8)
    if flat.shape[1] % 4:  # rows of an odd number of float16s: zero-pad to whole words
        flat = np.pad(flat, ((0, 0), (0, 4 - flat.shape[1] % 4)))
    words = flat.view(np.uint32)
    keys = _keys(words.shape[1])
    id_words = ids.view(np.uint32).reshape(n, 2)
    with np.errstate(over="ignore"):
        h = np.einsum("ij,j->i", words, keys[:-2]) + np.einsum("ij,j->i", id_words, keys[-2:])
    return np.asarray(h, dtype=np.uint64)


def shard_hashes(ids: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The ``rowhash`` array of a shard: (count, 2) uint64, the row hashes of ``v`` and of ``Z``."""
    return np.stack([row_hashes(ids, v), row_hashes(ids, z)], axis=1).astype(np.uint64)


# Files whose sha256 matched, with the (device, inode, size, mtime) they had then: a whole-file check runs once
# per process and file state, not on every read.
_MATCHED: dict[tuple[str, str], tuple[int, int, int, int]] = {}


def file_matches(path: Path, sha256: str, *, cached: bool = True) -> bool:
    """Whether `path` exists and has this sha256 (remembered until the file's stat changes)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    state = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    key = (str(path), sha256)
    if cached and _MATCHED.get(key) == state:
        return True
    try:
        ok = sha256_file(path) == sha256
    except OSError:
        return False
    if ok:
        _MATCHED[key] = state
    else:
        _MATCHED.pop(key, None)
    return ok


@dataclass(frozen=True)
class WrittenParts:
    """``v`` and ``Z`` of a shard written by another process (a distributed worker), still without ids.

    The committer completes it (`VectorStore.complete_shard`) once it has assigned the segment ids; until a
    catalog row names it, the next writer that opens the index deletes it like any other unreferenced file.
    """

    name: str
    count: int
    sha256: dict[str, str]
    z_dtype: str = "float32"

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "count": self.count, "sha256": dict(self.sha256), "z_dtype": self.z_dtype}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> WrittenParts:
        sums = d["sha256"]
        assert isinstance(sums, dict)
        return cls(str(d["name"]), int(str(d["count"])), {str(k): str(v) for k, v in sums.items()}, str(d["z_dtype"]))


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
        arrays[ROWHASH] = shard_hashes(arrays["ids"], arrays["v"], arrays["z"])
        sums = {part: _write_array(self.path(name, part), arr) for part, arr in arrays.items()}
        fsync_dir(self.root)
        return ShardInfo(name=name, count=n, generation=generation, sha256=sums, z_dtype=z_dtype)

    def write_parts(self, v: np.ndarray, z: np.ndarray, *, z_dtype: str = "float32") -> WrittenParts:
        """Write ``v`` and ``Z`` of a new shard durably, under a unique name, without its ids (see `WrittenParts`)."""
        if z_dtype not in Z_DTYPES:
            raise ValueError(f"Invalid z_dtype ({z_dtype}). Supported values are {', '.join(Z_DTYPES)}.")
        if v.shape[0] != z.shape[0]:
            raise ValueError("v and z must have the same number of rows")
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"w-{uuid.uuid4().hex[:16]}"
        sums = {
            "v": _write_array(self.path(name, "v"), np.ascontiguousarray(v, dtype=np.float32)),
            "z": _write_array(self.path(name, "z"), np.ascontiguousarray(z, dtype=np.dtype(z_dtype))),
        }
        fsync_dir(self.root)
        return WrittenParts(name=name, count=int(v.shape[0]), sha256=sums, z_dtype=z_dtype)

    def complete_shard(self, parts: WrittenParts, generation: int, ids: np.ndarray) -> ShardInfo:
        """Add the ids to a shard another process wrote, after checking its files have the announced rows."""
        if len(ids) != parts.count:
            raise ValueError(f"shard {parts.name} holds {parts.count} rows; got {len(ids)} ids")
        loaded: dict[str, np.ndarray] = {}
        for part in ("v", "z"):
            try:
                loaded[part] = np.load(self.path(parts.name, part), mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise IndexCorruptError(f"Vector shard {parts.name} written by a worker is unreadable: {exc}") from exc
            rows = loaded[part].shape[0]
            if rows != parts.count:
                raise IndexCorruptError(f"Vector shard {parts.name} holds {rows} rows; the worker said {parts.count}")
            if not file_matches(self.path(parts.name, part), parts.sha256[part], cached=False):
                raise IndexCorruptError(f"Vector shard {parts.name} written by a worker fails its checksum ({part})")
        ids = np.ascontiguousarray(ids, np.int64)
        hashes = shard_hashes(ids, loaded["v"], loaded["z"])
        sums = {
            **parts.sha256,
            "ids": _write_array(self.path(parts.name, "ids"), ids),
            ROWHASH: _write_array(self.path(parts.name, ROWHASH), hashes),
        }
        fsync_dir(self.root)
        return ShardInfo(name=parts.name, count=parts.count, generation=generation, sha256=sums, z_dtype=parts.z_dtype)

    def open_shard(self, info: ShardInfo) -> Shard:
        """Memory-map a shard, checking that its files exist and have the recorded shapes."""
        loaded: dict[str, np.ndarray] = {}
        for part in (*PARTS, ROWHASH):
            if part == ROWHASH and ROWHASH not in info.sha256:
                continue
            path = self.path(info.name, part)
            try:
                loaded[part] = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                what = "is missing" if not path.exists() else f"is unreadable ({exc})"
                raise ShardCorruptError(
                    f"Vector shard {info.name} is damaged: {VECTORS_DIR}/{path.name} {what}",
                    shard=info.name,
                    hint=REPAIR_HINT,
                ) from exc
        ids, v, z, hashes = loaded["ids"], loaded["v"], loaded["z"], loaded.get(ROWHASH)
        rows = {len(ids), v.shape[0], z.shape[0], info.count} | ({hashes.shape[0]} if hashes is not None else set())
        if len(rows) != 1 or (hashes is not None and hashes.shape[1:] != (2,)):
            raise ShardCorruptError(
                f"Vector shard {info.name} is damaged: its files hold {len(ids)}, {v.shape[0]} and {z.shape[0]} "
                f"rows; the manifest says {info.count}",
                shard=info.name,
                hint=REPAIR_HINT,
            )
        return Shard(info=info, ids=ids, v=v, z=z, rowhash=hashes)

    def write_row_hashes(self, info: ShardInfo) -> str:
        """Write the row-hash file of a shard from before row hashes existed (verify it first); its sha256."""
        shard = self.open_shard(info)
        hashes = np.concatenate(
            [
                shard_hashes(shard.ids[i : i + 4096], shard.v[i : i + 4096], shard.z[i : i + 4096])
                for i in range(0, max(info.count, 1), 4096)
            ]
        )
        digest = _write_array(self.path(info.name, ROWHASH), hashes)
        fsync_dir(self.root)
        return digest

    def damaged_files(self, info: ShardInfo, *, cached: bool = True) -> list[str]:
        """The files of a shard that are missing or fail the sha256 the manifest records (reads them whole)."""
        return [
            f"{VECTORS_DIR}/{self.path(info.name, part).name}"
            for part, digest in sorted(info.sha256.items())
            if not file_matches(self.path(info.name, part), digest, cached=cached)
        ]

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
    """The vectors of one published generation: lookup of ``v``/``Z`` rows by segment id across shards.

    Every row handed out is checked against its row hash first (see the module docstring); `holders` names
    the videos a shard holds, for the error that reports a damaged one. `verify_rows` = False skips the row
    checks (``scripts/bench_query.py`` measures their cost with it; nothing else turns them off).
    """

    def __init__(
        self,
        store: VectorStore,
        shard_infos: Sequence[ShardInfo],
        *,
        holders: Callable[[str], Sequence[str]] | None = None,
    ) -> None:
        self._fds: dict[tuple[int, str], int | None] = {}
        self.store = store
        self.verify_rows = True
        self._holders = holders
        self.shards: list[Shard] = []
        for info in shard_infos:
            try:
                self.shards.append(store.open_shard(info))
            except ShardCorruptError as exc:
                raise self._with_holders(exc) from exc
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
        # Every row's recorded hashes in memory, in id order (16 bytes a segment): a gather looks up those of its
        # rows in one step, however many shards they come from (per-shard lookups in the memory-mapped files
        # cost more than the hashing when the refine's rows spread over a hundred shards).
        self._hashed = np.array([s.rowhash is not None for s in self.shards], dtype=bool)
        parts = [
            np.asarray(s.rowhash, dtype=np.uint64) if s.rowhash is not None else np.zeros((len(s.ids), 2), np.uint64)
            for s in self.shards
        ]
        self._hash = np.concatenate(parts)[order] if parts else np.zeros((0, 2), np.uint64)
        # Plain array views of the memory maps: indexing a np.memmap costs a subclass round trip per call.
        self._data = [{"v": np.asarray(s.v), "z": np.asarray(s.z)} for s in self.shards]
        # Segment ids are never reused, so an id found twice means a damaged ids file.
        twice = np.nonzero(self._ids[1:] == self._ids[:-1])[0]
        if len(twice):
            s = int(self._shard[twice[0] + 1])
            raise self.damaged(s, f"segment id {int(self._ids[twice[0]])} appears twice")

    def _with_holders(self, exc: ShardCorruptError) -> ShardCorruptError:
        paths = tuple(self._holders(exc.shard)) if self._holders is not None and not exc.paths else exc.paths
        if not paths:
            return exc
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        err = ShardCorruptError(
            f"{exc.message}; it holds {len(paths)} video{'s' if len(paths) != 1 else ''}: {shown}",
            shard=exc.shard,
            paths=paths,
            hint=exc.hint,
        )
        return err

    def damaged(self, s: int, detail: str) -> ShardCorruptError:
        """The error for shard `s` failing a check: which of its files fail their sha256, and its videos."""
        info = self.shards[s].info
        files = self.store.damaged_files(info, cached=False)
        where = f"{', '.join(files)} fail{'s' if len(files) == 1 else ''} its checksum" if files else detail
        if files and detail:
            where = f"{detail}; {where}"
        err = ShardCorruptError(f"Vector shard {info.name} is damaged: {where}", shard=info.name, hint=REPAIR_HINT)
        return self._with_holders(err)

    def verify_whole(self, s: int, parts: Sequence[str] = (*PARTS, ROWHASH)) -> None:
        """Check the given files of shard `s` against the manifest's sha256s (once per process and file state)."""
        info = self.shards[s].info
        for part in parts:
            digest = info.sha256.get(part)
            if digest is not None and not file_matches(self.store.path(info.name, part), digest):
                raise self.damaged(s, "")

    def _check(
        self, ids: np.ndarray, data: np.ndarray, pos: np.ndarray, shard_idx: np.ndarray, rows: np.ndarray, part: str
    ) -> None:
        """Raise unless `data` (rows as stored, for segments `ids` at positions `pos` of the id map) hash to their
        recorded hashes; `shard_idx`/`rows` locate them for the error.

        One call hashes every row of a gather, whatever shards they come from (per-call overhead, not bytes,
        dominated the cost when each shard's rows were hashed apart). Rows of shards without row hashes are
        skipped here: their shard is checked whole (by its sha256s, once per process and file state).
        """
        if len(ids) == 0:
            return
        checked = self._hashed[shard_idx]
        if not checked.all():
            for s in np.unique(shard_idx[~checked]).tolist():
                self.verify_whole(int(s))
        got = row_hashes(ids, data)
        bad = np.nonzero(checked & (got != self._hash[pos, 0 if part == "v" else 1]))[0]
        if len(bad):
            s, row = int(shard_idx[bad[0]]), int(rows[bad[0]])
            raise self.damaged(s, f"row {row} ({part}) fails its row hash")

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def dim(self) -> int:
        return int(self.shards[0].v.shape[1]) if self.shards else 0

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, row) for each id; raises if an id is not in this generation's shards."""
        pos = self._positions(ids)
        return self._shard[pos], self._row[pos]

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """Each id's position in the id map; raises if an id is not in this generation's shards."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self._ids, ids)
        pos = np.minimum(pos, max(len(self._ids) - 1, 0))
        if len(self._ids) == 0 or not np.array_equal(self._ids[pos], ids):
            missing = int(ids[np.nonzero(self._ids[pos] != ids)[0][0]]) if len(self._ids) else int(ids[0])
            for s in range(len(self.shards)):  # an id the catalog knows but no shard holds: find the damage
                self.verify_whole(s, ("ids", ROWHASH))
            raise IndexCorruptError(f"Segment {missing} is not in the published vector data", hint=REPAIR_HINT)
        return pos

    def gather(self, ids: np.ndarray, *, widen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``v`` (n, D) float32 and ``Z`` (n, N, D) for the given segment ids, in the given order.

        ``Z`` is float32 by default. With `widen` False it comes as stored when every shard read stores the same
        dtype (float16 stays float16): numpy widens float16 element by element (~4 ms for a rerank's 100 rows
        of 49x512 on the development VM), torch ~20x faster, so the rerank widens it itself (`PromptScorer`).
        """
        ids = np.asarray(ids, dtype=np.int64)
        pos = self._positions(ids)
        shard_idx, rows = self._shard[pos], self._row[pos]
        n = len(rows)
        if n == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, 0, self.dim), np.float32)
        self._advise(shard_idx, rows, ("v", "z"))
        first = self.shards[int(shard_idx[0])]
        v = self._gather_part(ids, pos, "v", np.dtype(np.float32))
        # Z as stored (float16 or float32), hashed as stored, then widened; mixed shards go dtype by dtype.
        kinds = {int(s): self.shards[int(s)].z.dtype for s in np.unique(shard_idx)}
        if len(set(kinds.values())) == 1:
            stored = self._gather_part(ids, pos, "z", np.dtype(first.z.dtype))
            return v, (stored.astype(np.float32, copy=False) if widen else stored)
        z = np.empty((n, *first.z.shape[1:]), np.float32)
        for dtype in set(kinds.values()):
            sel = np.nonzero(np.isin(shard_idx, [s for s, d in kinds.items() if d == dtype]))[0]
            z[sel] = self._gather_part(ids[sel], pos[sel], "z", np.dtype(dtype))
        return v, z

    def _gather_part(self, ids: np.ndarray, pos: np.ndarray, part: str, dtype: np.dtype) -> np.ndarray:
        """Rows of ``v`` or ``Z`` (as stored, in `dtype`) for segments `ids` (at positions `pos` of the id map),
        verified against their row hashes."""
        shard_idx, rows = self._shard[pos], self._row[pos]
        first = self._data[int(shard_idx[0])][part]
        out = np.empty((len(ids), *first.shape[1:]), dtype)
        # One sort by (shard, row): each shard's rows are read front to back, in one indexing step per shard.
        order = np.lexsort((rows, shard_idx))
        by_shard = shard_idx[order]
        cuts = np.flatnonzero(by_shard[1:] != by_shard[:-1]) + 1
        starts, ends = np.concatenate([[0], cuts]).tolist(), np.concatenate([cuts, [len(order)]]).tolist()
        for lo, hi in zip(starts, ends, strict=True):
            sel = order[lo:hi]
            out[sel] = self._data[int(by_shard[lo])][part][rows[sel]]
        if self.verify_rows:
            self._check(ids, out, pos, shard_idx, rows, part)
        return out

    def gather_v(self, ids: np.ndarray) -> np.ndarray:
        """``v`` (n, D) float32 for the given segment ids, without touching ``Z`` (first-stage refinement)."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = self._positions(ids)
        if len(pos) == 0:
            return np.zeros((0, self.dim), np.float32)
        self._advise(self._shard[pos], self._row[pos], ("v",))
        return self._gather_part(ids, pos, "v", np.dtype(np.float32))

    def scan(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, v) of every row of shard `s`, for an exhaustive scan: ids and v verified whole first."""
        if self.verify_rows:
            self.verify_whole(s, ("ids", "v", ROWHASH))
        shard = self.shards[s]
        return np.asarray(shard.ids), np.asarray(shard.v, dtype=np.float32)

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
