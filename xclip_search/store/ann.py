"""The ANN index over ``v``: chosen by size and memory, a derived cache rebuilt from the vector data.

The first search stage ranks segments by ``cos(v, t)``; ids in the FAISS index are segment ids. Which index,
like autofaiss, follows from the vector count and a memory budget (`plan_ann`):

- ``flat``: exact inner product, for up to `FLAT_MAX` vectors. An exact scan reads every vector (2 KB each
  at D = 512) for every query: at 100k that is 200 MB of memory traffic, ~20 ms on 2 cores, while IVF-PQ with
  the exact refine answers in ~2 ms with the same recall (scripts/bench_query.py);
- ``ivfpq``: an inverted file with product-quantised codes (``m`` bytes a vector, ``m`` the largest that fits
  the budget), trained on the stored vectors, for anything larger. Its scores are approximate, so the snapshot
  takes ``refine`` x as many candidates and re-scores them with the exact ``v`` read by memory map from the
  shards (the refine step keeps the file small: the exact vectors are not copied into it);
- ``hnsw``: a graph over full vectors (exact scores, fast search, but 4·D bytes a vector and a slow CPU build);
  chosen only when asked for (``reindex --ann hnsw``).

A budget no kind fits is refused with a message that names the two knobs. The file is published atomically
and its sha256 recorded in the manifest: a damaged or mismatched file is refused, never served, and
``xclip-search reindex`` rebuilds it from the shards. GPU FAISS (the ``gpu`` extra) trains and fills IVF
indexes on the GPU when one is present; the published file is always a CPU index.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import DependencyError, IndexCorruptError, InvalidArgumentError
from .fsio import atomic_write, sha256_file
from .manifest import AnnInfo
from .vectors import Shard

ANN_DIR = "ann"
KINDS = ("auto", "flat", "ivfpq", "hnsw")
FLAT_MAX = 25_000
# Below this many vectors every kind is built as flat: PQ needs ~256 training points per code and an exact scan
# of a thousand vectors costs microseconds.
TRAINED_MIN = 1000
DEFAULT_MEMORY_BUDGET = 1 << 30
# Per-vector overheads FAISS adds on top of the codes: the id (8 bytes) in an inverted list; IndexIDMap2 keeps
# the id twice (a vector and a hash map, ~40 bytes an entry).
_IDMAP_BYTES = 48
_IVF_ID_BYTES = 8
_PQ_CHOICES = (64, 32, 16, 8, 4, 2, 1)
_HINT_BUDGET = "Raise the budget with --ann-memory, or choose a smaller index with --ann ivfpq."
_REINDEX_HINT = "Rebuild it from the vector data with 'xclip-search reindex'."


@dataclass(frozen=True)
class AnnPlan:
    """Which index to build and with what parameters, and the memory it will take once loaded."""

    kind: str
    params: dict[str, Any]
    memory_bytes: int
    reason: str
    exact: bool = field(default=False)

    @property
    def refine(self) -> int:
        return int(self.params.get("refine", 1))


def parse_size(text: str | int) -> int:
    """``"512MB"``, ``"2GiB"``, ``"1e9"`` or a plain byte count to bytes."""
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?(?:e[0-9]+)?)\s*([kmgt]?)(i?b)?\s*", text.lower())
        if not match:
            raise InvalidArgumentError(f"Invalid size ({text}). Use a byte count such as 512MB or 2GB.")
        scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[match.group(2)]
        value = int(float(match.group(1)) * scale)
    if value <= 0:
        raise InvalidArgumentError(f"Invalid size ({text}). It must be positive.")
    return value


def _pow2(x: float) -> int:
    return 1 << max(0, round(math.log2(max(1.0, x))))


def ivf_lists(count: int) -> int:
    """Inverted lists for `count` vectors: about 2·sqrt(n) (a power of two), and at least 40 vectors a list."""
    return int(max(1, min(_pow2(2 * math.sqrt(count)), _pow2(count / 64))))


def flat_memory(count: int, dim: int) -> int:
    return count * (4 * dim + _IDMAP_BYTES)


def ivfpq_memory(count: int, dim: int, nlist: int, m: int) -> int:
    codebooks = 256 * dim * 4
    return count * (m + _IVF_ID_BYTES) + nlist * dim * 4 + codebooks + nlist * 64


def hnsw_memory(count: int, dim: int, links: int) -> int:
    return count * (4 * dim + links * 2 * 4 + 8 + _IDMAP_BYTES)


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidArgumentError(f"Invalid ANN kind ({kind}). Supported values are {', '.join(KINDS)}.")
    return kind


def plan_ann(count: int, dim: int, *, kind: str = "auto", memory_budget: int = DEFAULT_MEMORY_BUDGET) -> AnnPlan:
    """Choose the ANN index for `count` vectors of `dim` floats within `memory_budget` bytes (see module doc)."""
    check_kind(kind)
    count = max(0, int(count))
    flat_bytes = flat_memory(count, dim)
    if count < TRAINED_MIN and kind != "flat":
        return AnnPlan("flat", {}, flat_bytes, f"{count} vectors: too few to train or need an ANN", exact=True)
    if kind == "flat" or (kind == "auto" and (count <= FLAT_MAX and flat_bytes <= memory_budget)):
        if flat_bytes > memory_budget:
            raise _over_budget("flat", flat_bytes, memory_budget, count)
        return AnnPlan("flat", {}, flat_bytes, f"{count} vectors: an exact scan is fast enough", exact=True)
    if kind == "hnsw":
        links = 32
        need = hnsw_memory(count, dim, links)
        if need > memory_budget:
            raise _over_budget("hnsw", need, memory_budget, count)
        params = {"M": links, "efConstruction": 80, "efSearch": 256}
        return AnnPlan("hnsw", params, need, "HNSW over full vectors, as asked", exact=True)
    nlist = ivf_lists(count)
    for m in _PQ_CHOICES:
        if dim % m:
            continue
        need = ivfpq_memory(count, dim, nlist, m)
        if need <= memory_budget:
            params = {
                "nlist": nlist,
                "m": m,
                "nbits": 8,
                "nprobe": max(1, min(nlist, max(16, nlist // 32))),
                "refine": 8,
                "train_size": min(count, max(64 * nlist, 256 * 64)),
                "niter": 10,
            }
            reason = f"{count} vectors: IVF{nlist},PQ{m} ({m} bytes a vector) fits {_fmt(memory_budget)}"
            return AnnPlan("ivfpq", params, need, reason)
    raise _over_budget("ivfpq", ivfpq_memory(count, dim, nlist, 1), memory_budget, count)


def _fmt(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _over_budget(kind: str, need: int, budget: int, count: int) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"A {kind} index over {count} vectors needs about {_fmt(need)}; the ANN memory budget is {_fmt(budget)}",
        hint=_HINT_BUDGET,
    )


# -- building ----------------------------------------------------------------------------------------------


def _faiss() -> Any:
    import faiss

    return faiss


def gpu_count() -> int:
    """GPUs FAISS can use here (0 with faiss-cpu)."""
    faiss = _faiss()
    get = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get()) if get is not None and hasattr(faiss, "StandardGpuResources") else 0
    except RuntimeError:  # pragma: no cover - a driver problem reads as no GPU
        return 0


def iter_live(
    shards: Sequence[Shard], live_ids: np.ndarray, chunk: int = 65536
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, v float32) of the live rows of `shards`, in chunks of at most `chunk` rows."""
    live = np.asarray(live_ids, dtype=np.int64)
    for shard in shards:
        ids = np.asarray(shard.ids)
        keep = np.nonzero(np.isin(ids, live, assume_unique=True))[0]
        for i in range(0, len(keep), chunk):
            sel = keep[i : i + chunk]
            yield ids[sel], np.ascontiguousarray(shard.v[sel], dtype=np.float32)


def _training_sample(shards: Sequence[Shard], live_ids: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """A uniform sample of `size` live vectors (all of them when there are fewer)."""
    live = np.asarray(live_ids, dtype=np.int64)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(live), size=min(size, len(live)), replace=False)) if len(live) else live
    wanted = live[picked]
    parts = []
    for shard in shards:
        ids = np.asarray(shard.ids)
        rows = np.nonzero(np.isin(ids, wanted, assume_unique=True))[0]
        if len(rows):
            parts.append(np.asarray(shard.v[rows], dtype=np.float32))
    return np.ascontiguousarray(np.concatenate(parts)) if parts else np.zeros((0, shards[0].v.shape[1]), np.float32)


def build_index(
    plan: AnnPlan, shards: Sequence[Shard], live_ids: np.ndarray, dim: int, *, use_gpu: bool | None = None
) -> Any:
    """Build the planned index over the live rows of `shards` (unit vectors, so scores are cosines)."""
    faiss = _faiss()
    if plan.kind == "flat":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    elif plan.kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, int(plan.params["M"]), faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = int(plan.params["efConstruction"])
        inner.hnsw.efSearch = int(plan.params["efSearch"])
        index = faiss.IndexIDMap2(inner)
    else:
        p = plan.params
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(
            quantizer, dim, int(p["nlist"]), int(p["m"]), int(p["nbits"]), faiss.METRIC_INNER_PRODUCT
        )
        index.nprobe = int(p["nprobe"])
        # 10 k-means iterations (FAISS defaults to 25) for the lists and the codebooks: the exact refine
        # absorbs the small loss in code quality, and training is most of the build time.
        index.cp.niter = int(p.get("niter", 10))
        index.pq.cp.niter = int(p.get("niter", 10))
        # FAISS warns below 39 training points a centroid; small indexes (tests, a few thousand segments) train
        # fine with fewer, and the warning would land in the user's terminal.
        index.cp.min_points_per_centroid = 4
        index.pq.cp.min_points_per_centroid = 4
        index.own_fields = True
        quantizer.this.disown()
        sample = _training_sample(shards, live_ids, int(p["train_size"]))
        if len(sample) < int(p["nlist"]):
            raise InvalidArgumentError(f"An IVF index with {p['nlist']} lists needs more vectors than {len(sample)}")
        available = gpu_count() > 0
        if use_gpu and not available:
            raise DependencyError(
                "A GPU build of the ANN index was asked for, but FAISS sees no GPU here",
                hint="Install the gpu extra (faiss-gpu in place of faiss-cpu) on a CUDA machine, or build on CPU.",
            )
        if available and use_gpu is not False:  # pragma: no cover - needs faiss-gpu and a GPU
            return _build_ivf_on_gpu(index, sample, shards, live_ids)
        index.train(sample)
    for ids, v in iter_live(shards, live_ids):
        index.add_with_ids(v, ids)
    return index


def _build_ivf_on_gpu(
    index: Any, sample: np.ndarray, shards: Sequence[Shard], live_ids: np.ndarray
) -> Any:  # pragma: no cover
    """Train and fill an IVF index on GPU 0, returning the CPU copy that gets published."""
    faiss = _faiss()
    resources = faiss.StandardGpuResources()
    options = faiss.GpuClonerOptions()
    options.useFloat16LookupTables = True  # PQ with many sub-quantizers needs them on the GPU
    gpu_index = faiss.index_cpu_to_gpu(resources, 0, index, options)
    gpu_index.train(sample)
    for ids, v in iter_live(shards, live_ids):
        gpu_index.add_with_ids(v, ids)
    return faiss.index_gpu_to_cpu(gpu_index)


def build_flat(shards: Sequence[Shard], live_ids: np.ndarray, dim: int) -> Any:
    """Exact inner-product index over the live rows of `shards`."""
    return build_index(plan_ann(0, dim, kind="flat"), shards, live_ids, dim)


def set_search_params(index: Any, info: AnnInfo) -> None:
    """Apply the recorded search-time parameters (nprobe, efSearch) to a loaded index."""
    faiss = _faiss()
    if info.kind == "ivfpq" and "nprobe" in info.params:
        faiss.extract_index_ivf(index).nprobe = int(info.params["nprobe"])
    if info.kind == "hnsw" and "efSearch" in info.params:
        faiss.downcast_index(index.index).hnsw.efSearch = int(info.params["efSearch"])


def search_params(index: Any, info: AnnInfo | None, k: int, selector: Any = None, *, widen: float = 1.0) -> Any:
    """FAISS search parameters for one query of `k` results.

    `selector` restricts the ids (filters); `widen` (> 1 when a filter keeps a fraction of the vectors) scales
    how much of the index is visited (IVF ``nprobe``, HNSW ``efSearch``) so enough allowed vectors are met.
    """
    faiss = _faiss()
    if info is None or info.kind == "flat":
        return faiss.SearchParameters(sel=selector) if selector is not None else None
    if info.kind == "hnsw":
        ef = int(max(int(info.params.get("efSearch", 64)), k) * widen)
        return faiss.SearchParametersHNSW(sel=selector, efSearch=ef)
    nlist = int(info.params.get("nlist", 1))
    nprobe = min(nlist, math.ceil(int(info.params.get("nprobe", 1)) * widen))
    return faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)


# -- publishing and loading -----------------------------------------------------------------------------------


def write_ann(index_dir: Path, index: Any, *, generation: int, kind: str, params: dict[str, Any]) -> AnnInfo:
    """Publish the FAISS index as ``ann/<generation>.faiss`` (temp file, fsync, rename) and describe it."""
    faiss = _faiss()
    directory = index_dir / ANN_DIR
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{generation:08d}.faiss"

    def write(f: BinaryIO) -> None:
        faiss.write_index(index, faiss.PyCallbackIOWriter(f.write))

    digest = atomic_write(directory / name, write)
    return AnnInfo(
        file=f"{ANN_DIR}/{name}",
        sha256=digest,
        kind=kind,
        count=int(index.ntotal),
        generation=generation,
        params=params,
    )


def load_ann(index_dir: Path, info: AnnInfo, *, dim: int | None = None) -> Any:
    """Read the ANN file named by the manifest, refusing it if its checksum, size, kind or dimension is off."""
    faiss = _faiss()
    path = index_dir / info.file
    if not path.is_file():
        raise IndexCorruptError(f"The ANN index file {info.file} is missing", hint=_REINDEX_HINT)
    if sha256_file(path) != info.sha256:
        raise IndexCorruptError(f"The ANN index file {info.file} fails its checksum", hint=_REINDEX_HINT)
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise IndexCorruptError(f"Cannot read the ANN index file {info.file}: {first}", hint=_REINDEX_HINT) from exc
    if int(index.ntotal) != info.count:
        raise IndexCorruptError(
            f"The ANN index holds {index.ntotal} vectors; the manifest says {info.count}", hint=_REINDEX_HINT
        )
    if dim is not None and int(index.d) != dim:
        raise IndexCorruptError(
            f"The ANN index has dimension {index.d}; the index's model has {dim}", hint=_REINDEX_HINT
        )
    expected = {"flat": "IndexIDMap2", "hnsw": "IndexIDMap2", "ivfpq": "IndexIVFPQ"}.get(info.kind)
    if expected is not None and type(index).__name__ != expected:
        raise IndexCorruptError(
            f"The ANN index file is a {type(index).__name__}; the manifest says {info.kind}", hint=_REINDEX_HINT
        )
    set_search_params(index, info)
    return index


def remove_unreferenced(index_dir: Path, keep: str | None) -> None:
    """Delete ANN files other than the published one (the writer calls this after publishing)."""
    directory = index_dir / ANN_DIR
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if entry.is_file() and f"{ANN_DIR}/{entry.name}" != keep:
            entry.unlink(missing_ok=True)
