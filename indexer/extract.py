"""One file in, pixel values per segment out: what a decode worker does (no torch, no model).

probe -> plan segments -> sample X-CLIP's frame indices for each segment -> decode only those frames (each
frame once, even when segments share it) -> the checkpoint's exact pixel pipeline. decord decodes by default;
when it fails, PyAV tries the same file before it is marked failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xclip_search.errors import VideoError
from xclip_search.pixels import PixelConfig, preprocess_frames
from xclip_search.sampling import sample_frame_indices

from .decoders import DECODERS, VideoInfo
from .probe import Limits, probe
from .segments import DEFAULT_MAX_SEGMENTS, DEFAULT_SEGMENT_SECONDS, SegmentPlan, plan_segments


@dataclass(frozen=True)
class ExtractSpec:
    """Everything a worker needs to turn a file into model inputs; small and picklable."""

    num_frames: int
    pixels: PixelConfig
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS
    max_segments: int = DEFAULT_MAX_SEGMENTS
    decoders: tuple[str, ...] = ("decord", "pyav")
    limits: Limits = field(default_factory=Limits)


@dataclass
class Extracted:
    """A decoded video: metadata, its segments and their pixel values ``(S, T, 3, H, W)`` float32."""

    path: str
    info: VideoInfo
    codec: str | None
    duration_s: float
    decoder: str
    segments: list[SegmentPlan]
    pixels: np.ndarray
    notes: list[str] = field(default_factory=list)


def extract(path: str, spec: ExtractSpec) -> Extracted:
    """Decode and preprocess one file; raises `VideoError` with a one-line reason on any failure."""
    probed = probe(path, spec.limits)
    errors: list[str] = []
    for name in spec.decoders:
        decoder = DECODERS[name]
        try:
            video = decoder.open(path)
        except VideoError as exc:
            errors.append(f"{name}: {exc}")
            continue
        try:
            info = video.info
            spec.limits.check_frames(info)
            plans = plan_segments(info.num_frames, info.fps, spec.segment_seconds, max_segments=spec.max_segments)
            per_segment = [sample_frame_indices(p.frame_start, p.frame_end, spec.num_frames) for p in plans]
            unique = sorted({i for idx in per_segment for i in idx})
            frames = video.frames(unique)
            where = {frame_index: row for row, frame_index in enumerate(unique)}
            # Each decoded frame is resized once even if two segments share it (short videos repeat frames).
            processed = preprocess_frames(frames, spec.pixels)
            pixels = np.stack([processed[[where[i] for i in idx]] for idx in per_segment])
        except VideoError as exc:
            errors.append(f"{name}: {exc}")
            continue
        finally:
            video.close()
        duration = info.num_frames / info.fps if info.fps > 0 else probed.duration_s or 0.0
        return Extracted(
            path=path,
            info=info,
            codec=probed.codec,
            duration_s=float(duration),
            decoder=name,
            segments=plans,
            pixels=pixels,
            notes=errors,
        )
    raise VideoError("; ".join(errors) if errors else "no decoder available")
