"""A read-only view of one published generation: what every search and tag call works on.

Opening reads the manifest once; everything after that (ANN, shards, catalog rows) is interpreted at that
manifest's generation, so a concurrent writer can publish the next generation without a reader ever mixing
the two. The ANN file covers the vectors up to its own generation; shards published after it are scanned
exactly, so new videos are searchable as soon as their batch commits.

The first stage returns exact cosines ``cos(v, t)`` whatever the ANN kind: a quantised index (IVF-PQ) only
proposes ``refine`` x as many ids, which are re-scored with the stored ``v``. So for the same candidate set the
scores and order equal an exhaustive scan's, and the ANN can only lose recall, never distort a score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IndexCorruptError
from . import ann as ann_store
from .catalog import Catalog
from .manifest import Manifest, read_manifest
from .vectors import VectorStore, VectorView

# A filter that keeps at most this many segments is answered by an exact scan of their ``v`` (a few ms), which
# also keeps very selective filters from starving the ANN of candidates.
EXACT_FILTER_MAX = 20_000
# How far a filter may widen the ANN's search (nprobe / efSearch) to find enough allowed vectors.
_MAX_WIDEN = 64


@dataclass(frozen=True)
class Candidate:
    """A first-stage hit: a live segment, its cosine ``cos(v, t)``, and its catalog row."""

    segment_id: int
    coarse_score: float
    row: dict[str, Any]


class Snapshot:
    """One generation of an index, opened for reading."""

    def __init__(self, index_dir: Path, manifest: Manifest, catalog: Catalog) -> None:
        self.dir = index_dir
        self.manifest = manifest
        self.catalog = catalog
        self.vectors = VectorView(VectorStore(index_dir), manifest.shards, holders=self._shard_videos)
        self._ann: Any = None
        self._retired: dict[int, int] = {}

    @classmethod
    def open(cls, index_dir: Path, catalog: Catalog | None = None) -> Snapshot:
        """Open the latest published generation (retrying once if a writer replaced files meanwhile)."""
        index_dir = Path(index_dir)
        for attempt in range(5):
            manifest = read_manifest(index_dir)
            cat = catalog or Catalog.open(index_dir)
            try:
                snap = cls(index_dir, manifest, cat)
                snap.ann_index()
                return snap
            except IndexCorruptError:
                # A writer may have published a newer generation or a rebuilt ANN file (same generation) and
                # removed the old file between our manifest read and the file open; a re-read settles that, a
                # real fault persists.
                latest = read_manifest(index_dir)
                if attempt == 4 or (latest.generation == manifest.generation and latest.ann == manifest.ann):
                    raise
                if catalog is None:
                    cat.close()
        raise AssertionError("unreachable")

    @property
    def generation(self) -> int:
        return self.manifest.generation

    def _shard_videos(self, shard: str) -> list[str]:
        """The videos with live segments in `shard` (named in the error that reports it damaged)."""
        return self.catalog.shard_videos(shard, self.manifest.generation)

    def ann_index(self) -> Any:
        if self._ann is None and self.manifest.ann is not None:
            self._ann = ann_store.load_ann(self.dir, self.manifest.ann, dim=self.manifest.model.embed_dim)
        return self._ann

    def live_ids(self) -> np.ndarray:
        return self.catalog.live_segment_ids(self.generation)

    # -- first stage -------------------------------------------------------------------------------------

    def coarse(self, query: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> list[Candidate]:
        """The `k` live segments with the highest ``cos(v, query)`` for a unit query vector.

        `allowed` (sorted live segment ids, from a filter) restricts the search to those segments.
        """
        q = np.ascontiguousarray(np.asarray(query, np.float32).reshape(-1))
        if allowed is not None and len(allowed) <= EXACT_FILTER_MAX:
            ids, scores = self._scan_ids(q, np.asarray(allowed, np.int64), k)
            fetched = len(ids)
        else:
            ids, scores = self._search(q, k, allowed)
            fetched = len(ids)
        if fetched == 0:
            return []
        # Start reading the prompt contexts of the candidates while the catalog answers (cheap if queued already).
        self.vectors.prefetch_z(ids[:k])
        rows = self.catalog.segment_rows(ids.tolist(), self.generation)
        out: list[Candidate] = []
        for sid, score in zip(ids.tolist(), scores.tolist(), strict=True):
            row = rows.get(sid)
            if row is not None:
                out.append(Candidate(segment_id=sid, coarse_score=float(score), row=row))
                if len(out) == k:
                    break
        return out

    def _scan_ids(self, q: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of the given segments, best `k` first."""
        if len(ids) == 0:
            return ids, np.zeros(0, np.float32)
        scores = self.vectors.gather_v(ids) @ q
        return _top(ids, scores, k)

    def _search(self, q: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        info = self.manifest.ann
        covered = info.generation if info else 0
        # Retired segments still in the ANN (or in scanned shards) take places; fetch enough to skip them. A
        # filter's allowed ids are live ones already.
        dead = self._retired_since(covered) if allowed is None else 0
        fetch = k + dead
        id_parts: list[np.ndarray] = []
        score_parts: list[np.ndarray] = []
        index = self.ann_index()
        if index is not None and info is not None and index.ntotal > 0:
            ids, scores = self._ann_search(index, q, fetch, allowed)
            id_parts.append(ids)
            score_parts.append(scores)
        for i, shard in enumerate(self.vectors.iter_shards()):
            if shard.info.generation <= covered:
                continue
            shard_ids, shard_v = self.vectors.scan(i)
            scores = shard_v @ q
            if allowed is not None:
                mask = np.isin(shard_ids, allowed, assume_unique=True)
                shard_ids, scores = shard_ids[mask], scores[mask]
            ids, scores = _top(shard_ids, scores, fetch)
            id_parts.append(ids)
            score_parts.append(scores)
        if not id_parts:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        return _top(np.concatenate(id_parts), np.concatenate(score_parts), fetch)

    def _retired_since(self, covered: int) -> int:
        """Segments retired between generation `covered` and this one: fixed for a snapshot (later writers only
        retire segments at later generations), so asked of the catalog once, not on every search."""
        dead = self._retired.get(covered)
        if dead is None:
            dead = self._retired[covered] = self.catalog.retired_since(covered, self.generation)
        return dead

    def _ann_search(
        self, index: Any, q: np.ndarray, fetch: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        info = self.manifest.ann
        assert info is not None
        exact = bool(info.params.get("exact", info.kind in ("flat", "hnsw")))
        refine = 1 if exact else max(1, int(info.params.get("refine", 1)))
        n = min(fetch * refine, int(index.ntotal))
        selector, keep = None, None
        widen = 1.0
        if allowed is not None:
            selector, keep = _bitmap_selector(allowed)
            widen = min(_MAX_WIDEN, max(1.0, info.count / max(1, len(allowed))))
        params = ann_store.search_params(index, info, n, selector, widen=widen)
        scores, ids = index.search(q[None, :], n, params=params)
        del keep  # the selector reads the bitmap during the search only
        found = ids[0] >= 0
        ids = ids[0][found].astype(np.int64)
        # Queue the prompt contexts of the likely candidates now: the disk reads overlap the refine and the
        # catalog lookup instead of starting when the rerank needs them.
        self.vectors.prefetch_z(ids[:fetch])
        if exact:
            return ids, scores[0][found]
        # Quantised scores only propose candidates; the stored v gives the exact cosine.
        return _top(ids, self.vectors.gather_v(ids) @ q, fetch)


def _top(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The `k` best (id, score) pairs, best first; ties broken by id so results are reproducible."""
    if len(scores) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        ids, scores = ids[part], scores[part]
    order = np.lexsort((ids, -scores))
    return ids[order], scores[order]


def _bitmap_selector(allowed: np.ndarray) -> tuple[Any, np.ndarray]:
    """A FAISS selector for the allowed ids, and the bitmap it points into (keep it alive while searching)."""
    import faiss

    top = int(allowed.max()) if len(allowed) else 0
    bits = np.zeros(top + 1, dtype=bool)
    bits[allowed] = True
    bitmap = np.packbits(bits, bitorder="little")
    return faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap)), bitmap
