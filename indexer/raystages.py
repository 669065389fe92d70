"""The stages of a distributed indexing run, as plain callables that Ray Data runs on its workers.

Ray Data constructs each stage inside its worker (an actor) from small JSON-able arguments, so no model or
open database crosses a process boundary, and nothing here imports ray: tests can call a stage directly.

- `DecodeStage` (CPU actors): one file per call, decoded by the same supervised decode pool as on one machine
  (one worker process, without torch, with its timeout and memory limit), so a file fails with the same
  status and reason as on one machine and a hostile file kills a decode process, never the Ray worker. Out
  comes one row per file: its outcome as JSON and its segments' cropped frames ``(S, T, h, w, 3)`` uint8.
- `EmbedStage` (one actor per GPU, else CPU actors): encodes the segments of a batch of files with X-CLIP and
  writes their ``v`` and ``Z`` as one immutable shard into the index directory (which must be on a filesystem
  every worker shares). Out comes one small row per file naming the shard and the file's rows in it; the one
  committer on the driver assigns segment ids and publishes (`indexer.distributed`).

A file that is lost with its worker never reaches the committer; the driver reports it (see `distributed`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xclip_search.store.vectors import WrittenParts

from .extract import ExtractSpec, FileSummary
from .pool import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, DecodePool, FileDone, FileFailed, SegmentReady
from .protocol import LOST_SEGMENTS, plan_from_list, plan_to_list
from .segments import SegmentPlan

Batch = dict[str, Any]

# Row columns between the stages and to the committer.
PATH, RESULT, CROPS = "path", "result", "crops"


@dataclass
class FileResult:
    """One file's outcome as it travels in a row from the decode stage to the embedding stage and on to the
    committer (as JSON: Ray rows hold plain values). The embedding stage adds where the file's vectors are."""

    status: str  # indexed, failed or skipped
    reason: str | None = None
    content_hash: str | None = None
    warnings: int = 0
    log: list[str] = field(default_factory=list)
    summary: FileSummary | None = None
    plans: list[SegmentPlan] = field(default_factory=list)  # the segments of the last decoder attempt
    shard: WrittenParts | None = None  # the shard holding this file's vectors,
    shard_files: int = 0  # how many files share it,
    row: int = 0  # and this file's first row in it

    @property
    def indexed(self) -> bool:
        return self.status == "indexed"

    def done(self, path: str) -> FileDone:
        return FileDone(path, self.summary, None, self.content_hash, self.warnings, self.log)

    def failed(self, path: str) -> FileFailed:
        return FileFailed(path, self.status, self.reason or "unknown error", self.content_hash, self.warnings)

    def to_json(self) -> str:
        return json.dumps(
            {
                "status": self.status,
                "reason": self.reason,
                "hash": self.content_hash,
                "warnings": self.warnings,
                "log": self.log,
                "summary": self.summary.to_dict() if self.summary else None,
                "plans": [plan_to_list(p) for p in self.plans],
                "shard": self.shard.to_dict() if self.shard else None,
                "shard_files": self.shard_files,
                "row": self.row,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> FileResult:
        d = json.loads(text)
        return cls(
            status=str(d["status"]),
            reason=d["reason"],
            content_hash=d["hash"],
            warnings=int(d["warnings"]),
            log=[str(x) for x in d["log"]],
            summary=FileSummary.from_dict(d["summary"]) if d["summary"] else None,
            plans=[plan_from_list(p) for p in d["plans"]],
            shard=WrittenParts.from_dict(d["shard"]) if d["shard"] else None,
            shard_files=int(d["shard_files"]),
            row=int(d["row"]),
        )


class DecodeStage:
    """Decode files in a supervised worker process (see the module docstring); one output row per file."""

    def __init__(
        self, spec: dict[str, Any], *, timeout_s: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB
    ) -> None:
        self.spec = ExtractSpec.from_dict(spec)
        self.pool = DecodePool(self.spec, 1, timeout_s=timeout_s, memory_mb=memory_mb, max_buffered=1 << 20)

    def __call__(self, batch: Batch) -> Batch:
        paths = [str(p) for p in batch[PATH]]
        results: list[str] = []
        crops: list[np.ndarray] = []
        for path in paths:
            result, frames = self.decode(path)
            results.append(result.to_json())
            crops.append(frames)
        return {PATH: paths, RESULT: results, CROPS: crops}

    def decode(self, path: str) -> tuple[FileResult, np.ndarray]:
        """One file's outcome and its segments' crops, keeping only the last decoder attempt."""
        attempt = 0
        plans: list[SegmentPlan] = []
        kept: list[np.ndarray] = []
        result = FileResult("failed", "the decode pool returned no result")
        for event in self.pool.run([path]):
            if isinstance(event, SegmentReady):
                if event.attempt > attempt:  # the worker switched decoders midway: start this file over
                    attempt, plans, kept = event.attempt, [], []
                elif event.attempt < attempt:
                    continue
                plans.append(event.plan)
                kept.append(event.crops)
            elif isinstance(event, FileDone):
                assert event.summary is not None
                result = FileResult(
                    "indexed", None, event.content_hash, event.warnings, event.log, event.summary, plans
                )
                if len(plans) != event.summary.segments:  # cannot happen unless the protocol is broken
                    result = FileResult("failed", LOST_SEGMENTS)
            elif isinstance(event, FileFailed):
                result = FileResult(event.status, event.reason, event.content_hash, event.warnings)
        if not result.indexed or not kept:
            t = self.spec.num_frames
            return result, np.zeros((0, t, 1, 1, 3), np.uint8)
        return result, np.stack(kept)

    def __del__(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.close()


class EmbedStage:
    """Encode a batch of decoded files and write their vectors as one shard (see the module docstring)."""

    def __init__(
        self,
        model: str,
        revision: str | None,
        config_hash: str,
        index_dir: str,
        *,
        batch_size: int,
        device: str | None = None,
        dtype: str | None = None,
        threads: int | None = None,
        z_dtype: str = "float32",
        fail_on: tuple[str, ...] = (),
    ) -> None:
        from pathlib import Path

        import torch

        from xclip_search.checkpoint import load_checkpoint
        from xclip_search.encoder import XClipEncoder
        from xclip_search.errors import IndexMismatchError
        from xclip_search.store.vectors import VectorStore

        from .extract import CropNormalizer

        checkpoint = load_checkpoint(model, revision=revision, device=device, dtype=dtype)
        if checkpoint.identity.config_hash != config_hash:
            raise IndexMismatchError(f"The Ray worker loaded another model from {model} than the driver did")
        if threads and checkpoint.device.type == "cpu":
            torch.set_num_threads(threads)
        self.encoder = XClipEncoder(checkpoint)
        self.to_pixels = CropNormalizer(checkpoint.pixels)
        self.store = VectorStore(Path(index_dir))
        self.batch_size = batch_size
        self.z_dtype = z_dtype
        self.fail_on = fail_on  # tests: paths whose batch kills this worker, as a lost machine would

    def __call__(self, batch: Batch) -> Batch:
        import os

        paths = [str(p) for p in batch[PATH]]
        if self.fail_on and any(p.endswith(self.fail_on) for p in paths):
            os._exit(1)
        results = [FileResult.from_json(r) for r in batch[RESULT]]
        crops = [np.asarray(c) for c in batch[CROPS]]
        todo = [i for i, r in enumerate(results) if r.indexed]
        if todo:
            segments = np.concatenate([crops[i] for i in todo])
            v, z = self._encode(segments)
            parts = self.store.write_parts(v, z, z_dtype=self.z_dtype)
            row = 0
            for i in todo:
                results[i].shard, results[i].shard_files, results[i].row = parts, len(todo), row
                row += len(crops[i])
        return {PATH: paths, RESULT: [r.to_json() for r in results]}

    def _encode(self, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vs, zs = [], []
        for start in range(0, len(segments), self.batch_size):
            emb = self.encoder.encode_videos(self.to_pixels(segments[start : start + self.batch_size]))
            vs.append(emb.v)
            zs.append(emb.z)
        return np.concatenate(vs), np.concatenate(zs)
