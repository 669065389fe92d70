"""The ANN index over ``v``: a derived cache, rebuilt from the vector data, verified by checksum on open.

The first search stage ranks segments by ``cos(v, t)``; ids in the FAISS index are segment ids. The file is
published atomically and its sha256 recorded in the manifest: a damaged or mismatched file is refused, never
served, and ``xclip-search reindex`` rebuilds it from the shards.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IndexCorruptError
from .fsio import atomic_write_bytes, sha256_file
from .manifest import AnnInfo
from .vectors import Shard

ANN_DIR = "ann"


def _faiss() -> Any:
    import faiss

    return faiss


def build_flat(shards: Sequence[Shard], live_ids: np.ndarray, dim: int) -> Any:
    """Exact inner-product index over the live rows of `shards` (unit vectors, so scores are cosines)."""
    faiss = _faiss()
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    live = np.asarray(live_ids, dtype=np.int64)
    for shard in shards:
        ids = np.asarray(shard.ids)
        keep = np.isin(ids, live, assume_unique=True)
        if keep.any():
            index.add_with_ids(np.ascontiguousarray(shard.v[keep], dtype=np.float32), ids[keep])
    return index


def write_ann(index_dir: Path, index: Any, *, generation: int, kind: str, params: dict[str, Any]) -> AnnInfo:
    """Publish the FAISS index as ``ann/<generation>.faiss`` and describe it for the manifest."""
    faiss = _faiss()
    directory = index_dir / ANN_DIR
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{generation:08d}.faiss"
    data = faiss.serialize_index(index).tobytes()
    digest = atomic_write_bytes(directory / name, data)
    return AnnInfo(
        file=f"{ANN_DIR}/{name}",
        sha256=digest,
        kind=kind,
        count=int(index.ntotal),
        generation=generation,
        params=params,
    )


def load_ann(index_dir: Path, info: AnnInfo) -> Any:
    """Read the ANN file named by the manifest, refusing it if its checksum or size does not match."""
    faiss = _faiss()
    path = index_dir / info.file
    hint = "Rebuild it from the vector data with 'xclip-search reindex'."
    if not path.is_file():
        raise IndexCorruptError(f"The ANN index file {info.file} is missing", hint=hint)
    if sha256_file(path) != info.sha256:
        raise IndexCorruptError(f"The ANN index file {info.file} fails its checksum", hint=hint)
    try:
        index = faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
    except RuntimeError as exc:
        raise IndexCorruptError(f"Cannot read the ANN index file {info.file}: {exc}", hint=hint) from exc
    if int(index.ntotal) != info.count:
        raise IndexCorruptError(
            f"The ANN index holds {index.ntotal} vectors; the manifest says {info.count}", hint=hint
        )
    return index


def remove_unreferenced(index_dir: Path, keep: str | None) -> None:
    """Delete ANN files other than the published one (the writer calls this after publishing)."""
    directory = index_dir / ANN_DIR
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if entry.is_file() and f"{ANN_DIR}/{entry.name}" != keep:
            entry.unlink(missing_ok=True)
