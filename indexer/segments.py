"""Cutting a video into the time windows that become searchable moments.

X-CLIP sees T frames per segment. Its training clips (Kinetics-400) are about 10 s long, so the default window
is 10 s: long enough for an action to happen, short enough that 8 frames still sample it densely and that a hit
points at a moment rather than a whole film. The last window is merged into the previous one when it would be
shorter than half a window, and a cap on windows per video lengthens them instead of dropping footage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xclip_search.errors import InvalidArgumentError

DEFAULT_SEGMENT_SECONDS = 10.0
DEFAULT_MAX_SEGMENTS = 360


@dataclass(frozen=True)
class SegmentPlan:
    seq: int
    frame_start: int
    frame_end: int
    start_s: float
    end_s: float


def plan_segments(
    num_frames: int,
    fps: float,
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
    *,
    max_segments: int = DEFAULT_MAX_SEGMENTS,
) -> list[SegmentPlan]:
    """Frame ranges ``[start, end)`` and their times for a video of `num_frames` frames at `fps`.

    ``segment_seconds == 0`` means one segment for the whole video.
    """
    if segment_seconds < 0 or not math.isfinite(segment_seconds):
        raise InvalidArgumentError(
            f"Invalid segment-seconds ({segment_seconds}). Use 0 (whole video) or a positive number."
        )
    if max_segments < 1:
        raise InvalidArgumentError(f"Invalid max segments ({max_segments}). It must be at least 1.")
    if num_frames < 1:
        raise InvalidArgumentError("A video needs at least one frame")
    rate = fps if fps and math.isfinite(fps) and fps > 0 else 25.0
    if segment_seconds == 0:
        return [SegmentPlan(0, 0, num_frames, 0.0, num_frames / rate)]
    length = max(1, round(segment_seconds * rate))
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
