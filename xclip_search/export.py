"""Export an index as Parquet for DuckDB, pandas, Polars or Spark: segments, videos, embeddings, tags and cues.

One directory, written under a temporary name and renamed into place when complete:

    segments.parquet  segment_id int64, video_id int64, seq int32, start_s float64, end_s float64,
                      frame_start int64, frame_end int64, path string, v fixed_size_list<float32>[D] (unit norm)
    videos.parquet    every column of the catalog's videos table (id, path, size, mtime_ns, content_hash,
                      duration_s, fps, num_frames, width, height, codec, status, reason, indexed_at, ...)
    contexts.parquet  segment_id int64, z fixed_size_list<float32>[N*D]: the prompt context Z, row-major (N, D)
    tags.parquet      segment_id int64, label string, prob float64, score float64, tagged_at string (if saved)
    cues.parquet      cue_id int64, video_id int64, start_s float64, end_s float64, text string, language string,
                      source string (sidecar / embedded / speech): subtitle and transcript lines (if any)
    concepts.parquet  name, text, method, model_source, model_hash, examples (JSON list), positives, negatives,
                      held_out_accuracy, learned_at, model (the classifier as JSON): concepts learned (if any)
    export.json       model identity, generation, D, N, counts and this layout

``Z`` goes to its own file because it is ~98% of the bytes (49 x 512 floats a segment for B/32, against 512 for
``v``): ``pandas.read_parquet("segments.parquet")`` or a DuckDB scan of the metadata never touches it, ``--no-z``
skips it, and its row groups are sized for 100 KB rows. It is one flat list per row rather than a list of lists
because every reader (Arrow, DuckDB, Spark) handles a single-level list and ``reshape(-1, N, D)`` restores it
without copying. Values are float32 even where the index stores float16, since not every reader has a half type.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DependencyError, InvalidArgumentError
from .filters import SearchFilter
from .store.catalog import ConceptRow, TagRow, VideoRow
from .store.fsio import fsync_dir
from .store.snapshot import Snapshot

EXPORT_FORMAT = 1
_SEGMENT_BATCH = 8192
_Z_BATCH = 512


@dataclass
class ExportReport:
    directory: str
    segments: int = 0
    videos: int = 0
    tags: int = 0
    cues: int = 0
    concepts: int = 0
    files: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "segments": self.segments,
            "videos": self.videos,
            "tags": self.tags,
            "cues": self.cues,
            "concepts": self.concepts,
            "files": dict(self.files),
            "bytes": sum(self.files.values()),
        }


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is a dependency
        raise DependencyError("Parquet export needs pyarrow", hint="pip install pyarrow") from exc
    return pa, pq


def _check_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidArgumentError(
            f"{out} already exists and is not an empty directory", hint="Export into a new or empty directory."
        )


def export_parquet(
    snapshot: Snapshot,
    out_dir: str | os.PathLike[str],
    *,
    include_z: bool = True,
    where: SearchFilter | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ExportReport:
    """Write the snapshot's live segments (those `where` keeps) to `out_dir` as described in the module doc."""
    pa, pq = _pyarrow()
    out = Path(out_dir).expanduser().resolve()
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    report = ExportReport(directory=str(out))
    try:
        ids = snapshot.catalog.segment_ids_where(snapshot.generation, where.clause()) if where else None
        video_ids = _write_segments(snapshot, tmp, ids, include_z, report, pa, pq, on_progress)
        videos = [asdict(v) for v in snapshot.catalog.videos_by_id(None if where is None else sorted(video_ids))]
        _write_table(pq, pa.Table.from_pylist(videos, schema=_video_schema(pa)), tmp / "videos.parquet")
        report.videos = len(videos)
        if snapshot.catalog.has_tags_table():
            report.tags = _write_tags(snapshot.catalog.saved_tags(snapshot.generation, ids), tmp, pa, pq)
        report.cues = _write_cues(snapshot, None if where is None else video_ids, tmp, pa, pq)
        report.concepts = _write_concepts(snapshot.catalog.concept_rows(), tmp, pa, pq)
        _write_description(snapshot, tmp, report, include_z, where)
        for f in sorted(tmp.iterdir()):
            report.files[f.name] = f.stat().st_size
        fsync_dir(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _write_segments(
    snapshot: Snapshot,
    tmp: Path,
    ids: np.ndarray | None,
    include_z: bool,
    report: ExportReport,
    pa: Any,
    pq: Any,
    on_progress: Callable[[int], None] | None,
) -> set[int]:
    model = snapshot.manifest.model
    dim, tokens = model.embed_dim, model.num_tokens
    seg_schema = pa.schema(
        [
            ("segment_id", pa.int64()),
            ("video_id", pa.int64()),
            ("seq", pa.int32()),
            ("start_s", pa.float64()),
            ("end_s", pa.float64()),
            ("frame_start", pa.int64()),
            ("frame_end", pa.int64()),
            ("path", pa.string()),
            ("v", pa.list_(pa.float32(), dim)),
        ],
        metadata={"xclip_search.dim": str(dim)},
    )
    z_schema = pa.schema(
        [("segment_id", pa.int64()), ("z", pa.list_(pa.float32(), tokens * dim))],
        metadata={"xclip_search.tokens": str(tokens), "xclip_search.dim": str(dim), "xclip_search.layout": "N,D"},
    )
    video_ids: set[int] = set()
    seg_writer = pq.ParquetWriter(tmp / "segments.parquet", seg_schema)
    z_writer = pq.ParquetWriter(tmp / "contexts.parquet", z_schema, compression="none") if include_z else None
    try:
        for rows in snapshot.catalog.iter_segments(snapshot.generation, ids, batch=_SEGMENT_BATCH):
            seg_ids = np.array([r.id for r in rows], dtype=np.int64)
            v = snapshot.vectors.gather_v(seg_ids)
            columns = {
                "segment_id": seg_ids,
                "video_id": np.array([r.video_id for r in rows], dtype=np.int64),
                "seq": np.array([r.seq for r in rows], dtype=np.int32),
                "start_s": np.array([r.start_s for r in rows], dtype=np.float64),
                "end_s": np.array([r.end_s for r in rows], dtype=np.float64),
                "frame_start": np.array([r.frame_start for r in rows], dtype=np.int64),
                "frame_end": np.array([r.frame_end for r in rows], dtype=np.int64),
                "path": pa.array([r.path for r in rows], pa.string()),
                "v": pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), dim),
            }
            seg_writer.write_table(pa.table(columns, schema=seg_schema))
            video_ids.update(int(x) for x in columns["video_id"])
            if z_writer is not None:
                for i in range(0, len(seg_ids), _Z_BATCH):
                    part = seg_ids[i : i + _Z_BATCH]
                    _, z = snapshot.vectors.gather(part)
                    flat = pa.FixedSizeListArray.from_arrays(pa.array(z.reshape(-1)), tokens * dim)
                    z_writer.write_table(pa.table({"segment_id": part, "z": flat}, schema=z_schema))
            report.segments += len(rows)
            if on_progress is not None:
                on_progress(len(rows))
    finally:
        seg_writer.close()
        if z_writer is not None:
            z_writer.close()
    for name in ("segments.parquet", "contexts.parquet"):
        _fsync(tmp / name)
    return video_ids


def _video_schema(pa: Any) -> Any:
    """Arrow types of the `VideoRow` columns: integers as int64, reals as float64, the rest as strings."""

    def arrow_type(annotation: str) -> Any:
        return (
            pa.int64()
            if annotation.startswith("int")
            else pa.float64()
            if annotation.startswith("float")
            else pa.string()
        )

    return pa.schema([(f.name, arrow_type(str(f.type))) for f in fields(VideoRow)])


def _write_tags(rows: list[TagRow], tmp: Path, pa: Any, pq: Any) -> int:
    schema = pa.schema(
        [
            ("segment_id", pa.int64()),
            ("label", pa.string()),
            ("prob", pa.float64()),
            ("score", pa.float64()),
            ("tagged_at", pa.string()),
        ]
    )
    _write_table(pq, pa.Table.from_pylist([asdict(r) for r in rows], schema=schema), tmp / "tags.parquet")
    return len(rows)


def _write_cues(snapshot: Snapshot, video_ids: set[int] | None, tmp: Path, pa: Any, pq: Any) -> int:
    """The cues of the exported videos (all when `video_ids` is None), by id; no file when there are none."""
    schema = pa.schema(
        [
            ("cue_id", pa.int64()),
            ("video_id", pa.int64()),
            ("start_s", pa.float64()),
            ("end_s", pa.float64()),
            ("text", pa.string()),
            ("language", pa.string()),
            ("source", pa.string()),
        ]
    )
    count = 0
    writer = None
    try:
        for batch in snapshot.catalog.iter_cues():
            rows = [c for c in batch if video_ids is None or c.video_id in video_ids]
            if not rows:
                continue
            if writer is None:
                writer = pq.ParquetWriter(tmp / "cues.parquet", schema)
            columns = {
                "cue_id": [c.id for c in rows],
                "video_id": [c.video_id for c in rows],
                "start_s": [c.cue.start for c in rows],
                "end_s": [c.cue.end for c in rows],
                "text": [c.cue.text for c in rows],
                "language": [c.cue.language for c in rows],
                "source": [c.cue.source for c in rows],
            }
            writer.write_table(pa.table(columns, schema=schema))
            count += len(rows)
    finally:
        if writer is not None:
            writer.close()
    _fsync(tmp / "cues.parquet")
    return count


def _write_concepts(rows: list[ConceptRow], tmp: Path, pa: Any, pq: Any) -> int:
    """Learned concepts, classifier included (JSON text), so another tool or index can read or re-import them."""
    if not rows:
        return 0
    schema = pa.schema(
        [
            ("name", pa.string()),
            ("text", pa.string()),
            ("method", pa.string()),
            ("model_source", pa.string()),
            ("model_hash", pa.string()),
            ("examples", pa.string()),
            ("positives", pa.int64()),
            ("negatives", pa.int64()),
            ("held_out_accuracy", pa.float64()),
            ("learned_at", pa.string()),
            ("model", pa.string()),
        ]
    )
    table = [{**asdict(r), "examples": json.dumps(list(r.examples))} for r in rows]
    _write_table(pq, pa.Table.from_pylist(table, schema=schema), tmp / "concepts.parquet")
    return len(rows)


def _write_description(
    snapshot: Snapshot, tmp: Path, report: ExportReport, include_z: bool, where: SearchFilter | None
) -> None:
    model = snapshot.manifest.model
    doc = {
        "format": EXPORT_FORMAT,
        "generation": snapshot.generation,
        "model": model.to_dict(),
        "dim": model.embed_dim,
        "tokens": model.num_tokens,
        "filter": where.describe() if where else [],
        "counts": {
            "segments": report.segments,
            "videos": report.videos,
            "tags": report.tags,
            "cues": report.cues,
            "concepts": report.concepts,
        },
        "files": {
            "segments.parquet": "one row per live segment; v = unit video embedding",
            "videos.parquet": "the catalog's videos table",
            **({"contexts.parquet": "Z per segment, float32, flattened row-major (tokens, dim)"} if include_z else {}),
            **({"tags.parquet": "labels saved with tag --save"} if report.tags else {}),
            **(
                {"cues.parquet": "subtitle and transcript lines (text, times, language, source)"} if report.cues else {}
            ),
            **({"concepts.parquet": "concepts learned with learn"} if report.concepts else {}),
        },
    }
    path = tmp / "export.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    _fsync(path)


def _write_table(pq: Any, table: Any, path: Path) -> None:
    pq.write_table(table, path)
    _fsync(path)


def _fsync(path: Path) -> None:
    if not path.exists():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
