"""Pixels must be bit-identical to transformers' VideoMAE image processor (the PIL backend of XCLIPProcessor)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from transformers.models.videomae.image_processing_pil_videomae import VideoMAEImageProcessorPil

from xclip_search.errors import CheckpointError
from xclip_search.pixels import PixelConfig, preprocess_frames

CONFIGS: list[dict[str, Any]] = [
    {
        "size": {"shortest_edge": 224},
        "crop_size": {"height": 224, "width": 224},
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "resample": 2,
    },
    {"size": 224, "crop_size": 224, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]},
    {"size": {"shortest_edge": 40}, "crop_size": {"height": 32, "width": 32}, "resample": 3},
    {"size": {"height": 50, "width": 70}, "crop_size": {"height": 48, "width": 48}},
    {"size": {"shortest_edge": 32}, "do_center_crop": False},
]
SIZES = [(720, 1280), (272, 640), (113, 77), (20, 30), (224, 224), (2, 300)]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("hw", SIZES)
def test_pixels_bit_identical_to_transformers(cfg: dict[str, Any], hw: tuple[int, int]) -> None:
    frames = np.random.default_rng(hash(hw) % 2**32).integers(0, 256, (3, *hw, 3), dtype=np.uint8)
    ref = np.asarray(VideoMAEImageProcessorPil(**cfg)(list(frames), return_tensors="np")["pixel_values"])[0]
    ours = preprocess_frames(frames, PixelConfig.from_preprocessor_dict(cfg, image_size=224))
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape
    assert np.array_equal(ours, ref)


def test_legacy_size_only_config_crops_to_the_model_resolution() -> None:
    # xclip-large-patch14-16-frames: 'size: 336' and no crop_size; transformers would crop to its default 224.
    legacy = {"size": 336, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    cfg = PixelConfig.from_preprocessor_dict(legacy, image_size=336)
    assert cfg.crop == (336, 336)
    frames = np.random.default_rng(0).integers(0, 256, (2, 360, 640, 3), dtype=np.uint8)
    ref = VideoMAEImageProcessorPil(**legacy, crop_size={"height": 336, "width": 336})(
        list(frames), return_tensors="np"
    )["pixel_values"]
    assert np.array_equal(preprocess_frames(frames, cfg), np.asarray(ref)[0])


def test_legacy_size_keeps_transformers_default_crop_for_other_models() -> None:
    assert PixelConfig.from_preprocessor_dict({"size": 256}, image_size=224).crop == (224, 224)


def test_missing_keys_take_videomae_defaults() -> None:
    cfg = PixelConfig.from_preprocessor_dict({}, image_size=224)
    assert cfg.mean == (0.5, 0.5, 0.5) and cfg.std == (0.5, 0.5, 0.5)
    assert cfg.resize == ("shortest_edge", 224) and cfg.crop == (224, 224) and cfg.resample == 2


@pytest.mark.parametrize("bad", [{"size": "big"}, {"crop_size": "x"}, {"image_mean": [0.5, 0.5]}])
def test_unsupported_configs_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(CheckpointError):
        PixelConfig.from_preprocessor_dict(bad, image_size=224)


def test_grayscale_or_float_frames_are_refused() -> None:
    with pytest.raises(ValueError):
        preprocess_frames(np.zeros((2, 10, 10), np.uint8), PixelConfig.from_preprocessor_dict({}, image_size=224))
