"""Frames to pixel values, exactly as `XCLIPProcessor` (PIL backend) computes them.

The checkpoint's ``preprocessor_config.json`` decides the steps: shortest-edge resize with PIL (bilinear by
default), centre crop (zero padding where the image is smaller, as transformers does), rescale in float64 then
cast to float32, and normalize in float32. Doing the same operations in the same precision makes the pixels
bit-identical to the reference, which is what keeps stored embeddings equal to `XCLIPModel.forward`.

This module imports numpy and PIL only, so decode workers can preprocess frames without loading torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import CheckpointError

# VideoMAEImageProcessor's defaults: what a config that omits a key means.
_DEFAULT_MEAN = (0.5, 0.5, 0.5)
_DEFAULT_STD = (0.5, 0.5, 0.5)
_DEFAULT_CROP = 224
_DEFAULT_SHORTEST_EDGE = 224
_BILINEAR = 2


@dataclass(frozen=True)
class PixelConfig:
    """The preprocessing steps of one checkpoint, resolved from its ``preprocessor_config.json``.

    `resize` is ``("shortest_edge", n)`` or ``("exact", h, w)``; `crop` is ``(h, w)``.
    """

    do_resize: bool
    resize: tuple[Any, ...]
    resample: int
    do_center_crop: bool
    crop: tuple[int, int]
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_preprocessor_dict(cls, cfg: Mapping[str, Any], *, image_size: int) -> PixelConfig:
        """Resolve a preprocessor config the way transformers reads it, plus the legacy ``size`` fix.

        Legacy configs give only ``size: N`` and no ``crop_size``; transformers then crops to its default 224,
        which is wrong for a checkpoint trained at another resolution (``xclip-large-patch14-16-frames`` at
        336 px). When the model's ``image_size`` equals ``size``, the crop is that size too.
        """
        size = cfg.get("size", _DEFAULT_SHORTEST_EDGE)
        resize: tuple[Any, ...]
        if isinstance(size, int):
            resize = ("shortest_edge", size)
        elif isinstance(size, Mapping) and "shortest_edge" in size:
            resize = ("shortest_edge", int(size["shortest_edge"]))
        elif isinstance(size, Mapping) and "height" in size and "width" in size:
            resize = ("exact", int(size["height"]), int(size["width"]))
        elif isinstance(size, (list, tuple)) and len(size) == 2:
            resize = ("exact", int(size[0]), int(size[1]))
        else:
            raise CheckpointError(f"Unsupported 'size' in preprocessor_config.json: {size!r}")

        crop_cfg = cfg.get("crop_size")
        if crop_cfg is None:
            legacy = resize[0] == "shortest_edge" and resize[1] == image_size
            crop = (image_size, image_size) if legacy else (_DEFAULT_CROP, _DEFAULT_CROP)
        elif isinstance(crop_cfg, int):
            crop = (crop_cfg, crop_cfg)
        elif isinstance(crop_cfg, Mapping) and "height" in crop_cfg and "width" in crop_cfg:
            crop = (int(crop_cfg["height"]), int(crop_cfg["width"]))
        else:
            raise CheckpointError(f"Unsupported 'crop_size' in preprocessor_config.json: {crop_cfg!r}")

        mean = cfg.get("image_mean", _DEFAULT_MEAN)
        std = cfg.get("image_std", _DEFAULT_STD)
        if isinstance(mean, (int, float)):
            mean = (mean,) * 3
        if isinstance(std, (int, float)):
            std = (std,) * 3
        if len(mean) != 3 or len(std) != 3:
            raise CheckpointError("image_mean and image_std must have 3 values (RGB)")
        return cls(
            do_resize=bool(cfg.get("do_resize", True)),
            resize=resize,
            resample=int(cfg.get("resample", _BILINEAR)),
            do_center_crop=bool(cfg.get("do_center_crop", True)),
            crop=crop,
            do_rescale=bool(cfg.get("do_rescale", True)),
            rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
            do_normalize=bool(cfg.get("do_normalize", True)),
            mean=(float(mean[0]), float(mean[1]), float(mean[2])),
            std=(float(std[0]), float(std[1]), float(std[2])),
        )

    @classmethod
    def from_pretrained_dir(cls, directory: Path, *, image_size: int) -> PixelConfig:
        """Read ``preprocessor_config.json`` from a checkpoint directory."""
        path = directory / "preprocessor_config.json"
        if not path.is_file():
            raise CheckpointError(
                f"{directory} has no preprocessor_config.json",
                hint="A checkpoint in save_pretrained layout needs the processor config X-CLIP was trained with.",
            )
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"Cannot read {path}: {exc}") from exc
        return cls.from_preprocessor_dict(cfg, image_size=image_size)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Height and width of the pixel values for a frame of the given size."""
        if self.do_center_crop:
            return self.crop
        if self.do_resize:
            return _resized_size(self.resize, height, width)
        return height, width

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _resized_size(resize: tuple[Any, ...], height: int, width: int) -> tuple[int, int]:
    """transformers' ``get_resize_output_image_size(default_to_square=False)``."""
    if resize[0] == "exact":
        return int(resize[1]), int(resize[2])
    target = int(resize[1])
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = target, int(target * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def _center_crop(image: np.ndarray, crop_h: int, crop_w: int) -> np.ndarray:
    """transformers' ``center_crop`` on an HWC image, including its zero padding of small images."""
    h, w = image.shape[:2]
    top = (h - crop_h) // 2
    left = (w - crop_w) // 2
    if top >= 0 and left >= 0 and top + crop_h <= h and left + crop_w <= w:
        return image[top : top + crop_h, left : left + crop_w]
    new_h, new_w = max(crop_h, h), max(crop_w, w)
    padded = np.zeros((new_h, new_w, *image.shape[2:]), dtype=image.dtype)
    top_pad = math.ceil((new_h - h) / 2)
    left_pad = math.ceil((new_w - w) / 2)
    padded[top_pad : top_pad + h, left_pad : left_pad + w] = image
    top += top_pad
    left += left_pad
    return padded[max(0, top) : min(new_h, top + crop_h), max(0, left) : min(new_w, left + crop_w)]


def resize_and_crop(frames: np.ndarray, cfg: PixelConfig) -> np.ndarray:
    """The uint8 part of the pipeline: ``(T, H, W, 3)`` uint8 frames to cropped ``(T, h, w, 3)`` uint8."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    out = []
    for frame in frames:
        image = frame
        if cfg.do_resize:
            new_h, new_w = _resized_size(cfg.resize, image.shape[0], image.shape[1])
            image = np.asarray(Image.fromarray(image).resize((new_w, new_h), resample=cfg.resample))
        if cfg.do_center_crop:
            image = _center_crop(image, *cfg.crop)
        out.append(image)
    return np.stack(out)


def normalize(cropped: np.ndarray, cfg: PixelConfig) -> np.ndarray:
    """The float part: uint8 ``(..., h, w, 3)`` to float32 ``(..., 3, h, w)`` pixel values.

    Rescale happens in float64 and is cast to float32, then ``(x - mean) / std`` in float32, as transformers
    does; the element-wise operations do not depend on the layout, so the result is bit-identical.
    """
    x: np.ndarray
    if cfg.do_rescale:
        x = (cropped.astype(np.float64) * cfg.rescale_factor).astype(np.float32)
    else:
        x = cropped.astype(np.float32)
    if cfg.do_normalize:
        mean = np.asarray(cfg.mean, dtype=np.float32)
        std = np.asarray(cfg.std, dtype=np.float32)
        x = (x - mean) / std
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def preprocess_frames(frames: np.ndarray, cfg: PixelConfig) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 decoded frames to ``(T, 3, h, w)`` float32 pixel values for X-CLIP."""
    return normalize(resize_and_crop(frames, cfg), cfg)
