"""Cutting a video into the time windows that become searchable moments.

X-CLIP sees T frames per segment. Its training clips (Kinetics-400) are about 10 s long, so the default window
is at most 10 s: long enough for an action to happen, short enough that 8 frames still sample it densely and
that a hit points at a moment rather than a whole film.

By default segments follow the footage's shots (`Segmentation` mode ``shots``): a segment never spans a hard
cut, so a hit starts where the asked-for shot starts. A shot longer than the window is split into near-equal
windows of at most that length; a shot shorter than the minimum joins a neighbour, across the weaker of its two
cuts (a flash or a cut the detector imagined is weaker than the real ones around it). Mode ``fixed`` keeps
consecutive windows: the last one is merged into the previous one when it would be shorter than half a window.
Either way, a cap on segments per video lengthens them instead of dropping footage, and X-CLIP's frame sampling
inside a segment is unchanged (DESIGN.md §2), so scores stay exact.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from xclip_search.errors import InvalidArgumentError
from xclip_search.store.segmentation import (
    DEFAULT_MAX_SEGMENTS,
    DEFAULT_SEGMENT_SECONDS,
    FIXED,
    SHOTS,
    Segmentation,
)

from .shots import Cut

__all__ = [
    "DEFAULT_MAX_SEGMENTS",
    "DEFAULT_SEGMENT_SECONDS",
    "FIXED",
    "SHOTS",
    "SegmentPlan",
    "Segmentation",
    "plan_segments",
    "plan_shots",
    "plan_video",
]


@dataclass(frozen=True)
class SegmentPlan:
    """Frames ``[frame_start, frame_end)`` of one segment and their times; `shot` numbers the shot it belongs
    to (segments of one shot share it), None when shots were not detected (fixed windows, whole videos)."""

    seq: int
    frame_start: int
    frame_end: int
    start_s: float
    end_s: float
    shot: int | None = None


def _rate(fps: float) -> float:
    return fps if fps and math.isfinite(fps) and fps > 0 else 25.0


def plan_segments(
    num_frames: int,
    fps: float,
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
    *,
    max_segments: int = DEFAULT_MAX_SEGMENTS,
) -> list[SegmentPlan]:
    """Fixed windows: frame ranges ``[start, end)`` and their times for a video of `num_frames` frames at `fps`.

    ``segment_seconds == 0`` means one segment for the whole video.
    """
    settings = Segmentation(mode=FIXED, segment_seconds=segment_seconds, max_segments=max_segments)
    if num_frames < 1:
        raise InvalidArgumentError("A video needs at least one frame")
    rate = _rate(fps)
    if settings.whole_video:
        return [SegmentPlan(0, 0, num_frames, 0.0, num_frames / rate)]
    length = max(1, round(settings.segment_seconds * rate))
    count = max(1, num_frames // length)
    if num_frames - count * length >= length / 2:
        count += 1
    if count > max_segments:
        count = max_segments
    bounds = [min(num_frames, i * length) for i in range(count)] + [num_frames]
    if count == max_segments and count * length < num_frames:
        # Too many windows: spread the cap evenly over the whole video rather than dropping its end.
        bounds = [round(i * num_frames / count) for i in range(count)] + [num_frames]
    return [
        SegmentPlan(i, bounds[i], bounds[i + 1], bounds[i] / rate, bounds[i + 1] / rate)
        for i in range(count)
        if bounds[i + 1] > bounds[i]
    ]


def plan_shots(num_frames: int, fps: float, cuts: Sequence[Cut], settings: Segmentation) -> list[SegmentPlan]:
    """Shot-aligned segments for a video whose shots start at `cuts` (see the module docstring)."""
    if num_frames < 1:
        raise InvalidArgumentError("A video needs at least one frame")
    rate = _rate(fps)
    if settings.whole_video:
        return [SegmentPlan(0, 0, num_frames, 0.0, num_frames / rate)]
    strength: dict[int, float] = {}
    for c in cuts:
        if 0 < c.frame < num_frames:
            strength[c.frame] = max(c.score, strength.get(c.frame, 0.0))
    bounds = [0, *sorted(strength), num_frames]
    min_len = settings.min_shot_seconds * rate

    def drop_weakest_cut_of(k: int) -> None:
        # Shot k spans bounds[k]..bounds[k + 1]; remove its weaker inner boundary (the video's ends stay).
        inner = [j for j in (k, k + 1) if 0 < j < len(bounds) - 1]
        j = min(inner, key=lambda j: strength[bounds[j]])
        del bounds[j]

    while len(bounds) > 2:
        lengths = [b - a for a, b in itertools.pairwise(bounds)]
        k = min(range(len(lengths)), key=lambda i: lengths[i])
        if lengths[k] >= min_len:
            break
        drop_weakest_cut_of(k)
    while len(bounds) - 1 > settings.max_segments:  # more shots than segments allowed: keep the strongest cuts
        weakest = min(range(1, len(bounds) - 1), key=lambda j: strength[bounds[j]])
        del bounds[weakest]
    window = max(1.0, settings.segment_seconds * rate)
    while True:
        counts = [max(1, math.ceil((b - a) / window - 1e-9)) for a, b in itertools.pairwise(bounds)]
        if sum(counts) <= settings.max_segments:
            break
        window *= 1.25  # too many windows: lengthen them all rather than drop footage
    plans: list[SegmentPlan] = []
    for shot, (a, b, count) in enumerate(zip(bounds, bounds[1:], counts, strict=False)):
        edges = [a + round(i * (b - a) / count) for i in range(count)] + [b]
        for lo, hi in itertools.pairwise(edges):
            if hi > lo:
                plans.append(SegmentPlan(len(plans), lo, hi, lo / rate, hi / rate, shot))
    return plans


def plan_video(
    num_frames: int, fps: float, settings: Segmentation, cuts: Sequence[Cut] | None = None
) -> list[SegmentPlan]:
    """The segments of a video under `settings`; shots mode needs its `cuts` (None: detection unavailable,
    which plans fixed windows)."""
    if settings.mode == SHOTS and cuts is not None:
        return plan_shots(num_frames, fps, cuts, settings)
    return plan_segments(num_frames, fps, settings.segment_seconds, max_segments=settings.max_segments)
