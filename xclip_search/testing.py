"""Offline fixtures: tiny random-init X-CLIP checkpoints and generated videos in several codecs.

Pretrained weights need the hub; these let tests and benchmarks run the whole pipeline offline in seconds with
transformers' own `XCLIPModel` (random weights, real CLIP tokenizer shipped in this package).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

TOKENIZER_DIR = Path(__file__).parent / "assets" / "clip-tokenizer"

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


#: Debian's headless Chromium for the browser test and the README screenshot: no network, no first-run work.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def preprocessor_config(image_size: int = 224) -> dict[str, object]:
    """The ``preprocessor_config.json`` of the released X-CLIP checkpoints, at `image_size` pixels."""
    return {
        "image_processor_type": "VideoMAEImageProcessor",
        "processor_class": "XCLIPProcessor",
        "size": {"shortest_edge": image_size},
        "crop_size": {"height": image_size, "width": image_size},
        "do_resize": True,
        "do_center_crop": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": IMAGENET_MEAN,
        "image_std": IMAGENET_STD,
        "resample": 2,
    }


def make_tiny_checkpoint(
    directory: str | Path,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    num_frames: int = 8,
    hidden: int = 32,
    projection_dim: int = 32,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
    preprocessor: Mapping[str, Any] | None = None,
    pickled: bool = False,
) -> Path:
    """Write a random-init `XCLIPModel` in save_pretrained layout (safetensors unless `pickled`)."""
    import torch
    from transformers import XCLIPConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = XCLIPConfig(
        text_config={
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "max_position_embeddings": 77,
        },
        vision_config={
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "image_size": image_size,
            "patch_size": patch_size,
            "num_frames": num_frames,
            "mit_hidden_size": projection_dim,
            "mit_intermediate_size": 2 * projection_dim,
            "mit_num_hidden_layers": 1,
            "mit_num_attention_heads": heads,
        },
        projection_dim=projection_dim,
        prompt_layers=2,
        prompt_num_attention_heads=heads,
    )
    return _save_random(out, config, image_size=image_size, preprocessor=preprocessor, pickled=pickled)


def make_base_checkpoint(directory: str | Path, *, seed: int = 0) -> Path:
    """A random-init checkpoint of ``microsoft/xclip-base-patch32``'s shape, offline.

    transformers' `XCLIPConfig` defaults are that model's configuration (ViT-B/32 at 224 px, 8 frames, 12-layer
    text tower, 512-d projections), so this has the real sizes, memory and speed, with random weights
    (``scripts/gpu_check.py`` compares devices on it; ~600 MB on disk).
    """
    import torch
    from transformers import XCLIPConfig

    torch.manual_seed(seed)
    return _save_random(Path(directory), XCLIPConfig(), image_size=224)


def _save_random(
    out: Path, config: Any, *, image_size: int, preprocessor: Mapping[str, Any] | None = None, pickled: bool = False
) -> Path:
    import torch
    from transformers import CLIPTokenizer, XCLIPModel

    out.mkdir(parents=True, exist_ok=True)
    model = XCLIPModel(config).eval()
    # Random init leaves alpha at 0.1 and the MLP near zero; widen it so the prompts visibly move scores.
    with torch.no_grad():
        model.prompts_generator.alpha.fill_(1.0)
    if pickled:
        config.save_pretrained(out)
        torch.save(model.state_dict(), out / "pytorch_model.bin")
    else:
        model.save_pretrained(out)
    tokenizer = CLIPTokenizer(str(TOKENIZER_DIR / "vocab.json"), str(TOKENIZER_DIR / "merges.txt"))
    tokenizer.save_pretrained(out)
    pre = dict(preprocessor if preprocessor is not None else preprocessor_config(image_size))
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=1))
    return out


def synthetic_frames(num_frames: int, height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """Frames with a moving coloured square over a textured background: content that changes over time."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 255, size=(3,), dtype=np.uint8)
    colour = rng.integers(0, 255, size=(3,), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.empty((height, width, 3), np.uint8)
    for c in range(3):
        base[..., c] = (background[c].astype(int) + (xx * (c + 1) + yy * (3 - c)) % 64).clip(0, 255)
    side = max(4, min(height, width) // 4)
    frames = np.repeat(base[None], num_frames, axis=0)
    for i in range(num_frames):
        x = int((width - side) * i / max(1, num_frames - 1))
        y = int((height - side) * (0.5 + 0.4 * np.sin(i / 3)))
        frames[i, y : y + side, x : x + side] = colour
    return frames


def write_video(
    path: str | Path,
    frames: np.ndarray,
    *,
    fps: int = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: Mapping[str, str] | None = None,
    subtitles: Sequence[tuple[float, float, str]] = (),
    subtitle_codec: str = "subrip",
    subtitle_language: str | None = None,
) -> Path:
    """Encode ``(T, H, W, 3)`` uint8 frames with PyAV (container from the file extension), with an optional text
    subtitle stream of ``(start_s, end_s, text)`` cues: `subtitle_codec` ``subrip`` or ``webvtt`` in Matroska,
    ``mov_text`` in MP4 (muxed as ready packets; PyAV has no subtitle encoder)."""
    import av

    out = Path(path)
    height, width = frames.shape[1:3]
    with av.open(str(out), mode="w") as container:
        stream: Any = container.add_stream(codec, rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = pix_fmt
        if options:
            stream.options = dict(options)
        text_stream: Any = container.add_mux_stream(subtitle_codec) if subtitles else None
        if text_stream is not None and subtitle_language:
            text_stream.metadata["language"] = subtitle_language
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if subtitles:
            base = text_stream.time_base or Fraction(1, 1000)
            for start, end, line in subtitles:
                data = line.encode("utf-8")
                if subtitle_codec == "mov_text":  # a 16-bit length before the text
                    data = len(data).to_bytes(2, "big") + data
                packet = av.Packet(data)
                packet.stream = text_stream
                packet.pts = packet.dts = round(float(start / base))
                packet.duration = round(float((end - start) / base))
                container.mux(packet)
    return out
