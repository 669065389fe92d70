"""Hard-cut detection on small frames: where a video's shots begin, cheaply enough to run on every file.

Shot-aligned segments need the cuts before X-CLIP's frames are sampled (a segment's frames depend on where it
starts and ends). With the CPU decoders a worker finds them in the same forward decode that yields the sampled
frames (`indexer.shotpass`, scoring each frame with `FrameScorer` and deciding it with `cut_at`); with other
decoders (NVDEC, ...) `detect_cuts` runs first, as a pass of its own. Either way it must cost little next to
decoding, so it never converts or resizes a full frame: each decoded frame's Y, U and V planes are read in
place (the decoder's own memory, yuv420p and its relatives) and subsampled by striding to a grid of about 48x27
luma values, and the colour and brightness of that grid are compared with the frame before (the separate pass
skips the deblocking filter, invisible at that scale, unless asked for `exact` frames). Other pixel formats are
scaled to that grid by FFmpeg's scaler instead. Nothing is kept but one small grid and one score per frame, so
memory stays flat whatever the resolution and length.

A cut is a frame whose difference from the previous frame (each grid value's difference capped, so that a
small part of the picture changing a lot, like a blinking light, does not count as much as all of it changing)
is both large in absolute terms and several times the typical difference around it (a running baseline, as
PySceneDetect's adaptive detector does), so fast motion and camera shake, which raise every neighbouring score,
do not read as cuts. Gradual transitions (fades, dissolves) are not detected: the segments of such a shot are
then plain windows.

Measured against PySceneDetect's content detector on a downscaled decode, keyframe placement, and this
detector without B-frames: see ``scripts/bench_shots.py`` and the README. No torch here (decode workers import
this).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from xclip_search.errors import VideoError

#: Width of the luma grid compared between frames (height follows the aspect ratio).
GRID_WIDTH = 48
#: A cut's score (mean absolute difference of the grid, each value's difference capped at `CELL_CAP`) must
#: reach this ...
MIN_SCORE = 8.0
#: ... and be this many times the running baseline of the scores around it.
MIN_RATIO = 2.5
#: A cut changes the whole picture a little or a lot; a blinking light or a shape appearing changes a small part
#: of it a lot. Capping each value's difference keeps the second from outscoring the first.
CELL_CAP = 64.0
#: Frames each side of a candidate whose scores make its baseline.
WINDOW = 6
#: 8-bit planar YUV formats whose planes are read in place.
_PLANAR_YUV = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv411p", "yuv440p"}


@dataclass(frozen=True)
class Cut:
    """A shot starts at `frame` (frame numbering as the decoders', `indexer.decoders`); `score` is its strength."""

    frame: int
    score: float


def _grid(frame: Any, steps: dict[str, tuple[int, int]]) -> np.ndarray:
    """The frame as a small float32 vector: strided Y, U and V samples, without touching the other pixels."""
    fmt = frame.format.name
    if fmt not in _PLANAR_YUV:
        w = GRID_WIDTH
        h = max(2, round(GRID_WIDTH * frame.height / max(frame.width, 1)))
        small = frame.reformat(width=w, height=h, format="yuv444p")
        return np.concatenate([_plane(small.planes[i], small.height, w, 1, 1).ravel() for i in range(3)]).astype(
            np.float32
        )
    parts = []
    for i, plane in enumerate(frame.planes[:3]):
        key = f"{fmt}:{i}:{plane.width}x{plane.height}"
        if key not in steps:
            sx = max(1, plane.width // (GRID_WIDTH if i == 0 else GRID_WIDTH // 2))
            steps[key] = (sx, sx)
        sy, sx = steps[key]
        parts.append(_plane(plane, plane.height, plane.width, sy, sx).ravel())
    return np.concatenate(parts).astype(np.float32)


class FrameScorer:
    """Scores decoded frames one after another: each frame's grid against the previous frame's (0 for the first
    frame and after a change of frame size)."""

    def __init__(self) -> None:
        self._steps: dict[str, tuple[int, int]] = {}
        self._previous: np.ndarray | None = None

    def score(self, frame: Any) -> float:
        grid = _grid(frame, self._steps)
        previous, self._previous = self._previous, grid
        if previous is None or previous.shape != grid.shape:
            return 0.0
        return float(np.minimum(np.abs(grid - previous), CELL_CAP).mean())


def _plane(plane: Any, height: int, width: int, sy: int, sx: int) -> np.ndarray:
    rows = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)
    return rows[:height:sy, :width:sx]


def frame_scores(
    path: str,
    *,
    skip_nonref: bool = False,
    exact: bool = False,
    on_frame: Callable[[], None] | None = None,
) -> tuple[np.ndarray, int]:
    """Per-frame difference scores (``scores[i]``: frame i against the frame decoded before it; 0 for the first)
    and the number of frames, numbered as the decoders number them (the i-th packet timestamp in order).

    `skip_nonref` lets the decoder skip frames no other frame refers to (most B-frames): cheaper, but a cut on a
    skipped frame is then found at the next decoded frame. `exact` keeps the deblocking filter on, so the scores
    are those of the frames as decoded for the model (`indexer.shotpass` scores those).
    """
    import av

    try:
        container = av.open(path, metadata_errors="ignore")
    except Exception as exc:
        raise VideoError(f"cannot open the file for shot detection: {exc}") from exc
    try:
        if not container.streams.video:
            raise VideoError("no video stream")
        stream = container.streams.video[0]
        stream.thread_count = 1
        timestamps = []
        for packet in container.demux(stream):
            ts = packet.pts if packet.pts is not None else packet.dts
            if packet.size and ts is not None:
                timestamps.append(int(ts))
        pts = sorted(timestamps)
        n = len(pts)
        scores = np.zeros(n, dtype=np.float32)
        if n == 0:
            return scores, 0
        container.close()
        container = av.open(path, metadata_errors="ignore")
        stream = container.streams.video[0]
        stream.thread_count = 1
        # The deblocking filter only smooths block edges, which a grid of ~48x27 samples cannot see: skipping it
        # saves about a fifth of H.264's decoding time (measured on tests/data).
        if not exact:
            stream.codec_context.options = {"skip_loop_filter": "all"}
        if skip_nonref:
            stream.codec_context.skip_frame = "NONREF"
        scorer = FrameScorer()
        seen = 0
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                continue
            for frame in frames:
                index = min(seen, n - 1) if frame.pts is None else min(bisect.bisect_left(pts, int(frame.pts)), n - 1)
                seen = index + 1
                scores[index] = scorer.score(frame)
                if on_frame is not None:
                    on_frame()
        return scores, n
    except av.error.FFmpegError as exc:  # a demuxing error: the file's shots are unknown, not the file lost
        raise VideoError(f"cannot read the packets for shot detection: {exc}") from exc
    finally:
        container.close()


def find_cuts(
    scores: np.ndarray, *, min_score: float = MIN_SCORE, min_ratio: float = MIN_RATIO, window: int = WINDOW
) -> list[Cut]:
    """The frames whose score is large and several times the baseline around them (see the module docstring)."""
    out = []
    for i in range(1, len(scores)):
        cut = cut_at(scores, i, min_score=min_score, min_ratio=min_ratio, window=window)
        if cut is not None:
            out.append(cut)
    return out


def cut_at(
    scores: np.ndarray, i: int, *, min_score: float = MIN_SCORE, min_ratio: float = MIN_RATIO, window: int = WINDOW
) -> Cut | None:
    """Whether frame `i` starts a shot (`find_cuts`' test for one frame); it reads ``scores[i - window:i +
    window + 1]``, so a caller scoring frames as they are decoded can decide frame `i` `window` frames later."""
    s = float(scores[i])
    if i < 1 or s < min_score:
        return None
    lo, hi = max(1, i - window), min(len(scores), i + window + 1)
    near = scores[lo:hi].tolist()
    del near[i - lo]
    near = [x for x in near if x > 0]  # frames skipped by the decoder carry no score
    # Most frames of moving footage score above `min_score`; their median baseline (a numpy call) is needed only
    # when fewer than half of their neighbours exceed s / min_ratio, and so may leave the frame a cut.
    bar = s / min_ratio * (1 + 1e-6)
    if sum(x > bar for x in near) > len(near) // 2:
        return None
    baseline = float(np.median(np.array(near, dtype=scores.dtype))) if near else 0.0
    return Cut(i, s) if s >= min_ratio * max(baseline, 1.0) else None


def detect_cuts(
    path: str, *, skip_nonref: bool = False, exact: bool = False, on_frame: Callable[[], None] | None = None
) -> list[Cut]:
    """The hard cuts of the video at `path` (see the module docstring); raises `VideoError`."""
    scores, _ = frame_scores(path, skip_nonref=skip_nonref, exact=exact, on_frame=on_frame)
    return find_cuts(scores)
