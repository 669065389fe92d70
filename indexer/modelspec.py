"""What decoding needs to know about a checkpoint, read from its JSON files without loading it.

Decode workers need the frame count and the pixel pipeline; choosing workers and threads needs the vision
tower's size. All of it is in ``config.json`` and ``preprocessor_config.json``, so a run can start decoding
while torch and the weights load (seconds on a CPU machine) instead of after. The loaded checkpoint is
compared with this reading before any segment is encoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xclip_search.checkpoint import resolve_checkpoint
from xclip_search.errors import CheckpointError
from xclip_search.pixels import PixelConfig

# XCLIPVisionConfig's defaults (transformers 5): what a config.json that omits a key means.
_VISION_DEFAULTS = {
    "num_frames": 8,
    "image_size": 224,
    "patch_size": 32,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
}


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a checkpoint's vision tower and its pixel pipeline."""

    num_frames: int
    image_size: int
    patch_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    pixels: PixelConfig

    def vision_gmacs(self) -> float:
        """Approximate multiply-adds (in billions) of the vision tower for one segment of T frames."""
        tokens = (self.image_size // self.patch_size) ** 2 + 1
        d, inner = self.hidden_size, self.intermediate_size
        per_layer = tokens * (4 * d * d + 2 * d * inner) + 2 * tokens * tokens * d
        return float(self.num_frames * self.num_hidden_layers * per_layer) / 1e9


def _int(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def read_model_shape(model: str, revision: str | None = None) -> ModelShape:
    """Read a checkpoint's shape from its JSON files (a hub id is downloaded, as loading it would)."""
    directory, _source, _revision = resolve_checkpoint(model, revision=revision)
    path = Path(directory) / "config.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"Cannot read {path}: {exc}") from exc
    vision = {**_VISION_DEFAULTS, **(raw.get("vision_config") or {})}
    image_size = _int(vision["image_size"])
    return ModelShape(
        num_frames=int(vision["num_frames"]),
        image_size=image_size,
        patch_size=_int(vision["patch_size"]),
        hidden_size=int(vision["hidden_size"]),
        intermediate_size=int(vision["intermediate_size"]),
        num_hidden_layers=int(vision["num_hidden_layers"]),
        pixels=PixelConfig.from_pretrained_dir(Path(directory), image_size=image_size),
    )
