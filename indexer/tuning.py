"""How many decode workers, model threads and segments per batch a run uses, chosen from the machine.

The two stages compete for the same cores. What decides the split is how expensive the model is per segment
compared with decoding one: a tiny model makes the run decode-bound (all cores decode, one model thread),
X-CLIP base makes it model-bound (the model gets every core, one worker decodes in the gaps). The estimate is
the vision tower's multiply-adds per segment, from the checkpoint's configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from xclip_search.checkpoint import Checkpoint

# Above this many multiply-adds per segment the model, not decoding, limits a CPU run. One segment of a
# 360p clip costs ~0.1 s of decoding on one core; X-CLIP B/32 (8 frames at 224 px, ~35 GMAC) ~0.9 s of model.
HEAVY_MODEL_GMACS = 2.0


@dataclass(frozen=True)
class Resources:
    workers: int
    threads: int | None
    batch_size: int
    gmacs_per_segment: float


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def vision_gmacs(checkpoint: Checkpoint) -> float:
    """Approximate multiply-adds (in billions) of the vision tower for one segment."""
    cfg: Any = checkpoint.model.config.vision_config
    tokens = (cfg.image_size // cfg.patch_size) ** 2 + 1
    d, inner, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    per_layer = tokens * (4 * d * d + 2 * d * inner) + 2 * tokens * tokens * d
    return float(cfg.num_frames * layers * per_layer) / 1e9


def resolve_resources(
    checkpoint: Checkpoint, *, workers: int | None, batch_size: int | None, threads: int | None
) -> Resources:
    """Fill in what the user left open (None) from the core count and the model's cost."""
    cores = available_cores()
    gmacs = vision_gmacs(checkpoint)
    on_gpu = checkpoint.device.type != "cpu"
    heavy = gmacs >= HEAVY_MODEL_GMACS and not on_gpu
    if workers is None:
        workers = max(1, cores // 2) if heavy else min(8, cores)
    if threads is None and not on_gpu:
        threads = cores if heavy else max(1, cores - workers)
    if batch_size is None:
        batch_size = 32 if on_gpu else (16 if heavy else 8)
    return Resources(workers=workers, threads=threads, batch_size=batch_size, gmacs_per_segment=gmacs)
