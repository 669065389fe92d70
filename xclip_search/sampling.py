"""Which frames of a segment X-CLIP sees.

X-CLIP was evaluated with VideoX's single-view test sampling: the segment is cut into T equal parts and the
middle frame of each part is taken. Any other choice (the transformers docstring's random window, linspace,
first frames) gives other embeddings than the published numbers, so this module is the only place that
decides frame indices. It imports no torch: decode workers use it.
"""

from __future__ import annotations

from .errors import InvalidArgumentError

SUPPORTED_NUM_FRAMES = (8, 16, 32)


def sample_frame_indices(start: int, end: int, num_frames: int) -> list[int]:
    """Indices of the `num_frames` frames X-CLIP reads from the frame range ``[start, end)``.

    ``avg = (end - start) / T``; ``idx_i = start + int(avg * i + avg / 2)``, clipped into ``[start, end)``.
    A segment shorter than T frames repeats frames, exactly as the reference does.
    """
    if num_frames < 1:
        raise InvalidArgumentError(f"Invalid num_frames ({num_frames}). It must be at least 1.")
    if start < 0 or end <= start:
        raise InvalidArgumentError(f"Invalid frame range [{start}, {end}). It must hold at least one frame.")
    avg = (end - start) / num_frames
    last = end - 1
    return [min(max(start + int(avg * i + avg / 2), start), last) for i in range(num_frames)]
