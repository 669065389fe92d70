"""How many decode workers, model threads and segments per batch a run uses, chosen from the machine.

The two stages compete for the same cores. What decides the split is how expensive the model is per segment
compared with decoding one: a tiny model makes the run decode-bound (all cores decode, one model thread),
X-CLIP base makes it model-bound (the model gets every core, one worker at low priority decodes in the gaps:
one segment of a 360p clip costs ~0.15 s of one core to decode and ~1 s to encode). The estimate is the vision
tower's multiply-adds per segment, from the checkpoint's configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .modelspec import ModelShape

# Above this many multiply-adds per segment the model, not decoding, limits a CPU run. One segment of a
# 360p clip costs ~0.1 s of decoding on one core; X-CLIP B/32 (8 frames at 224 px, ~35 GMAC) ~0.9 s of model.
HEAVY_MODEL_GMACS = 2.0


@dataclass(frozen=True)
class Resources:
    workers: int
    threads: int | None
    batch_size: int
    gmacs_per_segment: float
    worker_nice: int = 0


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_resources(
    shape: ModelShape, *, on_gpu: bool, workers: int | None, batch_size: int | None, threads: int | None
) -> Resources:
    """Fill in what the user left open (None) from the core count and the model's cost."""
    cores = available_cores()
    gmacs = shape.vision_gmacs()
    heavy = gmacs >= HEAVY_MODEL_GMACS and not on_gpu
    if workers is None:
        workers = max(1, cores // 2) if heavy else min(8, cores)
    if threads is None and not on_gpu:
        threads = cores if heavy else max(1, cores - workers)
    if batch_size is None:
        batch_size = 32 if on_gpu else (16 if heavy else 8)
    # When the model is the bottleneck, decoding only has to keep up: lowering the workers' priority lets the
    # model's threads run undisturbed and leaves decoding the gaps (measured: 0.47 vs 0.44 videos/s on 2 busy
    # cores with X-CLIP base).
    nice = 10 if heavy else 0
    return Resources(workers, threads, batch_size, gmacs, worker_nice=nice)


def likely_gpu(device: str | None) -> bool:
    """Whether the model will probably run on a GPU, decided without importing torch (seconds on a CPU box).

    Only the split of cores depends on it; the model's threads are set once it is loaded on its real device.
    """
    if device is not None and device != "auto":
        return not device.startswith("cpu")
    gpus = "/proc/driver/nvidia/gpus"
    return os.path.isdir(gpus) and bool(os.listdir(gpus))
