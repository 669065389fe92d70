"""``index --dry-run``: what a run would do, and roughly what it would cost, without writing anything.

It walks and classifies exactly as a run does, probes every file that would be decoded (in the same isolated
workers, so a hostile file cannot hurt the dry run either), counts the segments their headers imply, and
estimates time from two short measurements on this machine: decoding a small sample of the files in one
worker, and one model batch on random pixels. Disk is the vector bytes per segment (``v``, ``Z``, id, ANN)
plus catalog rows. The estimate ignores other load on the machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xclip_search.checkpoint import DEFAULT_MODEL, Checkpoint, load_checkpoint
from xclip_search.store.catalog import Catalog
from xclip_search.store.manifest import MANIFEST_NAME, read_manifest
from xclip_search.store.segmentation import read_segmentation

from .changes import classify
from .extract import ExtractSpec
from .modelspec import read_model_shape
from .pipeline import IndexOptions, refuse_empty, segmentation_request, validate_options
from .pool import DecodePool, FileDone, FileFailed, SegmentReady
from .segments import Segmentation, plan_segments
from .tuning import available_cores, resolve_resources
from .walk import walk

_SAMPLE_FILES = 3
_SAMPLE_MAX_SEGMENTS = 30
_CATALOG_BYTES_PER_SEGMENT = 200
_CATALOG_BYTES_PER_VIDEO = 400


@dataclass
class DryRunReport:
    """What `index` would do; `to_dict` is the ``index --dry-run --json`` shape."""

    counts: dict[str, int]
    files: list[dict[str, Any]] = field(default_factory=list)
    segments: int = 0
    seconds: float | None = None
    bytes: int = 0
    basis: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": True,
            **self.counts,
            "segments": self.segments,
            "estimate": {"seconds": self.seconds, "bytes": self.bytes, **self.basis},
            "files": self.files,
        }


def dry_run(
    paths: Sequence[str | os.PathLike[str]],
    index_dir: str | os.PathLike[str],
    *,
    model: str | None = None,
    options: IndexOptions | None = None,
) -> DryRunReport:
    """Walk, classify and probe as `run_index` would, and estimate its time and disk use."""
    opts = options or IndexOptions()
    validate_options(opts)
    index_path = Path(index_dir).expanduser().resolve()
    roots = [os.path.abspath(os.fspath(p)) for p in paths]
    rows: dict[str, dict[str, Any]] = {}
    source = model
    segmentation = segmentation_request(opts).over(Segmentation())
    if (index_path / MANIFEST_NAME).exists():
        recorded = read_manifest(index_path).model
        source = source or recorded.source
        catalog = Catalog.open(index_path)
        try:
            rows = catalog.videos_by_path()
            segmentation = segmentation_request(opts).over(read_segmentation(catalog).settings)
        finally:
            catalog.close()
    plan = classify(
        walk(roots, follow_links=opts.follow_links), rows, roots=roots, retry_failed=opts.retry_failed, prune=opts.prune
    )
    refuse_empty(roots, plan, rows, opts)
    counts = {
        "to_index": len(plan.todo),
        "unchanged": len(plan.unchanged),
        "moved": len(plan.moved),
        "removed": len(plan.removed),
        "skipped": sum(1 for i in plan.issues if i.status == "skipped"),
        "failed": sum(1 for i in plan.issues if i.status == "failed"),
        "still_failed": sum(1 for e in plan.earlier if e.status == "failed"),
        "still_skipped": sum(1 for e in plan.earlier if e.status == "skipped"),
    }
    report = DryRunReport(counts=counts)
    report.files.extend({"path": u.path, "action": "move", "from": u.old_path} for u in plan.moved)
    report.files.extend({"path": p, "action": "remove"} for p in plan.removed)
    report.files.extend({"path": i.path, "action": i.status, "reason": i.reason} for i in plan.issues)
    report.files.extend({"path": e.path, "action": f"still {e.status}", "reason": e.reason} for e in plan.earlier)
    if not plan.todo:
        return report

    checkpoint = load_checkpoint(source or DEFAULT_MODEL, device=opts.device, dtype=opts.dtype)
    res = resolve_resources(
        read_model_shape(str(checkpoint.directory)),
        on_gpu=checkpoint.device.type != "cpu",
        workers=opts.workers,
        batch_size=opts.batch_size,
        threads=opts.torch_threads,
    )
    spec = opts.extract_spec(checkpoint.num_frames, checkpoint.pixels, segmentation)
    planned: dict[str, int] = {}
    with DecodePool(spec, max(1, min(res.workers, len(plan.todo))), timeout_s=opts.timeout_s) as pool:
        for event in pool.run([f.path for f in plan.todo], mode="probe"):
            if isinstance(event, FileFailed):
                report.files.append({"path": event.path, "action": event.status, "reason": event.reason})
                continue
            if isinstance(event, FileDone) and event.probe is not None:
                probed = event.probe
                # Shots are not known before decoding: fixed windows of the same length, the fewest it can be.
                n = len(
                    plan_segments(
                        probed.estimated_frames(),
                        probed.fps,
                        segmentation.segment_seconds,
                        max_segments=segmentation.max_segments,
                    )
                )
                planned[event.path] = n
                report.files.append(
                    {"path": event.path, "action": "index", "duration_s": probed.duration_s, "segments": n}
                )
    report.segments = sum(planned.values())
    decode_s = _decode_seconds_per_segment(spec, planned, opts)
    model_s = _model_seconds_per_segment(checkpoint, res.batch_size, res.threads)
    cores = available_cores()
    threads = res.threads or cores
    per_segment = max(decode_s / max(1, res.workers), model_s, (decode_s + model_s * threads) / cores)
    report.seconds = round(report.segments * per_segment, 1)
    ident = checkpoint.identity
    per_vector = 4 * ident.embed_dim * (1 + ident.num_tokens) + 8 + (4 * ident.embed_dim + 8)
    report.bytes = report.segments * (per_vector + _CATALOG_BYTES_PER_SEGMENT) + len(planned) * _CATALOG_BYTES_PER_VIDEO
    report.basis = {
        "decode_seconds_per_segment": round(decode_s, 4),
        "model_seconds_per_segment": round(model_s, 4),
        "workers": res.workers,
        "threads": res.threads,
        "batch_size": res.batch_size,
    }
    return report


def _decode_seconds_per_segment(spec: ExtractSpec, planned: dict[str, int], opts: IndexOptions) -> float:
    """Decode a few representative files in one worker and time it (per planned segment, one core: with shots,
    the planned count is a lower bound and the time includes cut detection, so the file's time is right)."""
    small = (
        sorted((n, p) for p, n in planned.items() if n <= _SAMPLE_MAX_SEGMENTS)
        or sorted((n, p) for p, n in planned.items())[:1]
    )
    if not small:
        return 0.0
    mid = len(small) // 2
    sample = [p for _, p in small[max(0, mid - 1) : mid - 1 + _SAMPLE_FILES]] or [small[0][1]]
    segments = 0
    with DecodePool(spec, 1, timeout_s=opts.timeout_s, memory_mb=opts.memory_mb) as pool:
        # Start the worker first so its start-up is not counted.
        for _ in pool.run([], mode="probe"):
            pass
        started = time.perf_counter()
        for event in pool.run(sample):
            segments += isinstance(event, SegmentReady)
        elapsed = time.perf_counter() - started
    return elapsed / sum(planned[p] for p in sample) if segments else 0.0


def _model_seconds_per_segment(checkpoint: Checkpoint, batch_size: int, threads: int | None) -> float:
    """One warm model batch on random pixels of the right shape."""
    import torch

    from xclip_search.encoder import XClipEncoder

    encoder = XClipEncoder(checkpoint)
    h, w = checkpoint.pixels.crop
    pixels = np.random.default_rng(0).standard_normal((batch_size, checkpoint.num_frames, 3, h, w)).astype(np.float32)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        encoder.encode_videos(pixels[:1])
        started = time.perf_counter()
        encoder.encode_videos(pixels)
        return (time.perf_counter() - started) / batch_size
    finally:
        torch.set_num_threads(before)
