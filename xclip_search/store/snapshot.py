"""A read-only view of one published generation: what every search and tag call works on.

Opening reads the manifest once; everything after that (ANN, shards, catalog rows) is interpreted at that
manifest's generation, so a concurrent writer can publish the next generation without a reader ever mixing
the two. The ANN file covers the vectors up to its own generation; shards published after it are scanned
exactly, so new videos are searchable as soon as their batch commits.
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
        self.vectors = VectorView(VectorStore(index_dir), manifest.shards)
        self._ann: Any = None

    @classmethod
    def open(cls, index_dir: Path, catalog: Catalog | None = None) -> Snapshot:
        """Open the latest published generation (retrying once if a writer replaced files meanwhile)."""
        index_dir = Path(index_dir)
        for attempt in range(3):
            manifest = read_manifest(index_dir)
            cat = catalog or Catalog.open(index_dir)
            try:
                snap = cls(index_dir, manifest, cat)
                snap.ann_index()
                return snap
            except IndexCorruptError:
                # A writer may have published a newer generation and removed the old ANN file between our
                # manifest read and the file open; a re-read settles that, a real fault persists.
                if attempt == 2 or read_manifest(index_dir).generation == manifest.generation:
                    raise
        raise AssertionError("unreachable")

    @property
    def generation(self) -> int:
        return self.manifest.generation

    def ann_index(self) -> Any:
        if self._ann is None and self.manifest.ann is not None:
            self._ann = ann_store.load_ann(self.dir, self.manifest.ann)
        return self._ann

    def coarse(self, query: np.ndarray, k: int) -> list[Candidate]:
        """The `k` live segments with the highest ``cos(v, t)`` for a unit query vector."""
        q = np.ascontiguousarray(np.asarray(query, np.float32).reshape(1, -1))
        ann_info = self.manifest.ann
        covered = ann_info.generation if ann_info else 0
        fetch = k + self.catalog.retired_since(covered, self.generation)
        ids_parts: list[np.ndarray] = []
        score_parts: list[np.ndarray] = []
        index = self.ann_index()
        if index is not None and index.ntotal > 0:
            scores, ids = index.search(q, min(fetch, int(index.ntotal)))
            keep = ids[0] >= 0
            ids_parts.append(ids[0][keep])
            score_parts.append(scores[0][keep])
        for shard in self.vectors.iter_shards():
            if shard.info.generation <= covered:
                continue
            scores = np.asarray(shard.v) @ q[0]
            top = np.argpartition(-scores, min(fetch, len(scores)) - 1)[:fetch] if len(scores) > fetch else None
            sel = np.arange(len(scores)) if top is None else top
            ids_parts.append(np.asarray(shard.ids)[sel])
            score_parts.append(scores[sel])
        if not ids_parts:
            return []
        all_ids = np.concatenate(ids_parts)
        all_scores = np.concatenate(score_parts)
        order = np.argsort(-all_scores, kind="stable")
        all_ids, all_scores = all_ids[order], all_scores[order]
        rows = self.catalog.segment_rows(all_ids.tolist(), self.generation)
        out: list[Candidate] = []
        seen: set[int] = set()
        for sid, score in zip(all_ids.tolist(), all_scores.tolist(), strict=True):
            if sid in rows and sid not in seen:
                seen.add(sid)
                out.append(Candidate(segment_id=sid, coarse_score=float(score), row=rows[sid]))
                if len(out) == k:
                    break
        return out
