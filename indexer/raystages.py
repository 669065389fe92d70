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
from typing import Any

import numpy as np

from .extract import ExtractSpec
from .pool import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, DecodePool, FileDone, FileFailed, SegmentReady
from .protocol import LOST_SEGMENTS, plan_to_list

Batch = dict[str, Any]

# Row columns between the stages and to the committer.
PATH, RESULT, CROPS = "path", "result", "crops"


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
            results.append(json.dumps(result))
            crops.append(frames)
        return {PATH: paths, RESULT: results, CROPS: crops}

    def decode(self, path: str) -> tuple[dict[str, Any], np.ndarray]:
        """One file's outcome (JSON-able) and its segments' crops, keeping only the last decoder attempt."""
        attempt = 0
        plans: list[list[float]] = []  # `protocol.plan_to_list`
        kept: list[np.ndarray] = []
        result: dict[str, Any] = {"status": "failed", "reason": "the decode pool returned no result"}
        for event in self.pool.run([path]):
            if isinstance(event, SegmentReady):
                if event.attempt > attempt:  # the worker switched decoders midway: start this file over
                    attempt, plans, kept = event.attempt, [], []
                elif event.attempt < attempt:
                    continue
                plans.append(plan_to_list(event.plan))
                kept.append(event.crops)
            elif isinstance(event, FileDone):
                assert event.summary is not None
                result = {
                    "status": "indexed",
                    "summary": event.summary.to_dict(),
                    "hash": event.content_hash,
                    "warnings": event.warnings,
                    "log": event.log,
                    "plans": plans,
                }
                if len(plans) != event.summary.segments:  # cannot happen unless the protocol is broken
                    result = {"status": "failed", "reason": LOST_SEGMENTS, "hash": None}
            elif isinstance(event, FileFailed):
                result = {
                    "status": event.status,
                    "reason": event.reason,
                    "hash": event.content_hash,
                    "warnings": event.warnings,
                }
        if result["status"] != "indexed" or not kept:
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
        results = [json.loads(r) for r in batch[RESULT]]
        crops = [np.asarray(c) for c in batch[CROPS]]
        todo = [i for i, r in enumerate(results) if r["status"] == "indexed"]
        if todo:
            segments = np.concatenate([crops[i] for i in todo])
            v, z = self._encode(segments)
            parts = self.store.write_parts(v, z, z_dtype=self.z_dtype)
            row = 0
            for i in todo:
                results[i]["shard"] = parts.to_dict()
                results[i]["shard_files"] = len(todo)
                results[i]["row"] = row
                row += len(crops[i])
        return {PATH: paths, RESULT: [json.dumps(r) for r in results]}

    def _encode(self, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vs, zs = [], []
        for start in range(0, len(segments), self.batch_size):
            emb = self.encoder.encode_videos(self.to_pixels(segments[start : start + self.batch_size]))
            vs.append(emb.v)
            zs.append(emb.z)
        return np.concatenate(vs), np.concatenate(zs)
