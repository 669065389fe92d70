"""Shot-aligned segments from one decoding pass: the cuts and X-CLIP's frames from the same decoded frames.

A segment's frames depend on where its shot starts and ends, so shots mode needs a file's cuts before it can
sample it. Done in two passes (`shots.detect_cuts` over every frame, then a seeking decoder for the sampled
frames), a file is decoded about twice: measured on 10 s clips at 360p, the detection pass alone cost 80% of
the sampling decode. Here one forward decode with PyAV does both:

- every frame is scored (`shots.FrameScorer`), and frame ``i`` is decided cut or not once frame
  ``i + shots.WINDOW`` is scored, by `shots.cut_at`, the test `shots.find_cuts` applies: the same cuts;
- the segments are planned (`segments.plan_video`) from the cuts decided so far, as if the open shot ran to the
  end of the file; frames that plan samples are converted (RGB, resize and crop, thumbnail) when they leave a
  bounded buffer of recent decoded frames, so a plan that a later cut changes still finds most of its frames in
  the buffer; what is neither converted nor buffered any more is decoded again by seeking (`decoders`), which
  costs what the second pass cost, for that shot only;
- a segment is sent as soon as no later cut can change it: its shot ends at a cut at least `min_shot_seconds`
  before the last decided frame (a later cut can only drop a cut next to a shorter shot), or the file ended.

Frames are PyAV's RGB frames, bit-identical to decord's (checked per codec in tests/test_decoders.py), and each
segment is the plan `plan_video` makes from the cuts `find_cuts` finds, so the segments, pixels and scores are
those of the two passes. Anything unusual (a packet that does not decode, frames out of order or missing, a
seek that does not return the exact frame, a plan that the segment cap reshapes, a sent segment that the final
plan contradicts) abandons the pass: the caller decodes the file the two-pass way under a new attempt number,
and the consumer drops what was sent (as after any decoder switch). No torch here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xclip_search.errors import VideoError
from xclip_search.pixels import PixelConfig, resize_and_crop
from xclip_search.sampling import sample_frame_indices
from xclip_search.thumbnails import thumbnail_or_none

from .decoders import PyAVDecoder, VideoInfo, clean_message
from .probe import Limits
from .segments import Segmentation, SegmentPlan, plan_video
from .shots import WINDOW, Cut, FrameScorer, cut_at

#: Decoded frames kept for plans that a later cut changes (bytes of decoded pictures; at 360p ~11 s of 25 fps).
BUFFER_BYTES = 96 << 20
#: Converted frames kept for segments not yet sent (the open shot's: a long shot's are sent when it ends).
HELD_BYTES = 256 << 20


class Abandoned(Exception):
    """The pass cannot give the two-pass result for this file; `cuts` are the file's cuts when known."""

    def __init__(self, why: str, cuts: list[Cut] | None = None) -> None:
        super().__init__(why)
        self.cuts = cuts


@dataclass
class PassResult:
    """What the pass learnt about the file, once every segment was sent."""

    info: VideoInfo
    cuts: list[Cut]
    segments: int


@dataclass
class _Converted:
    crop: np.ndarray
    thumbnail: bytes | None = None


@dataclass
class _State:
    """The segments planned so far, the frames they want, and where their shots start."""

    plan: list[SegmentPlan]
    wanted: set[int] = field(default_factory=set)
    middles: set[int] = field(default_factory=set)
    #: (first frame, segment number) of each shot after the first, in order
    shot_starts: list[tuple[int, int]] = field(default_factory=list)
    _next: int = 0
    _ready: int = 0

    def settled(self, limit: float) -> int:
        """How many leading segments no later cut can change: those of shots ending at a cut at or before
        `limit` (the first undecided frame less the shortest shot). A cut is dropped only next to a shot shorter
        than that, and the shot after such a cut is already at least that long. `limit` only grows."""
        while self._next < len(self.shot_starts) and self.shot_starts[self._next][0] <= limit:
            self._ready = self.shot_starts[self._next][1]
            self._next += 1
        return self._ready


def applies(settings: Segmentation, decoders: tuple[str, ...], seekable: bool) -> bool:
    """Whether a file is decoded in one pass: shots mode with the CPU decoders (whose frames are PyAV's)."""
    return settings.follows_shots and seekable and bool(decoders) and decoders[0] in ("decord", "pyav")


class ShotPass:
    """One forward decode of `path` that yields ``(plan, crops (T, h, w, 3), thumbnail)`` per segment; then
    `result` holds the file's info and cuts. Raises `Abandoned` (see the module docstring) or
    `xclip_search.errors.VideoLimitError`."""

    def __init__(
        self,
        path: str,
        *,
        num_frames: int,
        pixels: PixelConfig,
        settings: Segmentation,
        limits: Limits,
        thumbnails: bool,
        on_frame: Callable[[], None],
        fallback_size: tuple[int, int] = (0, 0),
    ) -> None:
        self.path = path
        self.num_frames = num_frames
        self.pixels = pixels
        self.settings = settings
        self.limits = limits
        self.thumbnails = thumbnails
        self._on_frame = on_frame
        self._fallback_size = fallback_size
        self.result: PassResult | None = None
        self._buffer: deque[tuple[int, Any, int]] = deque()  # (index, decoded frame, bytes)
        self._buffer_bytes = 0
        self._sizes: dict[tuple[int, int, str], int] = {}
        self._held: dict[int, _Converted] = {}
        self._held_bytes = 0
        self._seeker: Any = None

    # -- the pass ------------------------------------------------------------------------------------------

    def segments(self) -> Iterator[tuple[SegmentPlan, np.ndarray, bytes | None]]:
        import av

        containers: list[Any] = []

        def open_video() -> Any:
            try:
                container = av.open(self.path, metadata_errors="ignore")
            except Exception as exc:
                raise Abandoned(f"cannot open: {clean_message(exc)}") from exc
            containers.append(container)
            if not container.streams.video:
                raise Abandoned("no video stream")
            return container

        try:
            yield from self._run(open_video, av)
        except av.error.FFmpegError as exc:
            raise Abandoned(f"cannot decode: {clean_message(exc)}") from exc
        finally:
            for container in containers:
                container.close()
            if self._seeker is not None:
                self._seeker.close()

    def _run(self, open_video: Callable[[], Any], av: Any) -> Iterator[tuple[SegmentPlan, np.ndarray, bytes | None]]:
        container = open_video()
        stream = container.streams.video[0]
        # Frame i is the i-th packet timestamp in order, as the decoders number frames (`indexer.decoders`).
        pts = sorted(int(p.pts) if p.pts is not None else int(p.dts) for p in container.demux(stream) if _timed(p))
        n = len(pts)
        if n == 0 or len(set(pts)) != n:
            raise Abandoned("no frames, or frames sharing a timestamp")
        rate = stream.average_rate or stream.guessed_rate
        cc = stream.codec_context
        width, height = int(cc.width or 0), int(cc.height or 0)
        if not width or not height:
            width, height = self._fallback_size
        info = VideoInfo(num_frames=n, fps=float(rate) if rate else 0.0, width=width, height=height)
        self.limits.check_frames(info)
        min_len = self.settings.min_shot_seconds * (info.fps if info.fps > 0 else 25.0)

        container = open_video()  # reopening is the exact way back to the start (the demux read every packet)
        stream = container.streams.video[0]
        stream.thread_count = 1
        scores = np.zeros(n, dtype=np.float32)
        scorer = FrameScorer()
        cuts: list[Cut] = []
        state = self._state(n, info.fps, cuts, sent=0)
        sent: list[SegmentPlan] = []
        decided = 1  # frames below this are decided (frame 0 never starts a shot)
        expected = 0
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                raise Abandoned(f"a packet does not decode: {clean_message(exc)}") from exc
            for frame in frames:
                if frame.pts is None or expected >= n or int(frame.pts) != pts[expected]:
                    raise Abandoned("frames out of order or without timestamps")
                i = expected
                expected += 1
                scores[i] = scorer.score(frame)
                self._buffer_frame(i, frame, state)
                self._on_frame()
                found = False
                while decided <= i - WINDOW:
                    cut = cut_at(scores, decided)
                    if cut is not None:
                        cuts.append(cut)
                        found = True
                    decided += 1
                if found:
                    state = self._replan(n, info.fps, cuts, sent)
                ready = state.settled(decided - min_len)
                for plan in state.plan[len(sent) : ready]:
                    yield self._emit(plan, state)
                    sent.append(plan)
        if expected != n:
            raise Abandoned(f"{expected} of {n} frames decoded")
        for j in range(decided, n):
            cut = cut_at(scores, j)
            if cut is not None:
                cuts.append(cut)
        state = self._replan(n, info.fps, cuts, sent, final=True)
        for plan in state.plan[len(sent) :]:
            yield self._emit(plan, state)
        self.result = PassResult(info, cuts, len(state.plan))

    # -- plans ---------------------------------------------------------------------------------------------

    def _state(self, n: int, fps: float, cuts: list[Cut], sent: int) -> _State:
        plan = plan_video(n, fps, self.settings, cuts)
        if len(plan) >= self.settings.max_segments:
            # The cap reshapes the whole plan (longer windows, fewer cuts): only the two passes know it ahead.
            raise Abandoned("the segment cap applies", None)
        state = _State(plan)
        state.shot_starts = [(p.frame_start, k) for k, p in enumerate(plan) if k and p.shot != plan[k - 1].shot]
        for p in plan[sent:]:
            indices = sample_frame_indices(p.frame_start, p.frame_end, self.num_frames)
            state.wanted.update(indices)
            state.middles.add(indices[len(indices) // 2])
        return state

    def _replan(self, n: int, fps: float, cuts: list[Cut], sent: list[SegmentPlan], *, final: bool = False) -> _State:
        state = self._state(n, fps, cuts, len(sent))
        if state.plan[: len(sent)] != sent:  # the two passes can reuse the cuts once all are known
            raise Abandoned("a later cut changed a sent segment", list(cuts) if final else None)
        for j in [j for j in self._held if j not in state.wanted]:
            self._drop_held(j)
        return state

    # -- frames --------------------------------------------------------------------------------------------

    def _buffer_frame(self, i: int, frame: Any, state: _State) -> None:
        geometry = (frame.width, frame.height, frame.format.name)
        size = self._sizes.get(geometry)
        if size is None:
            size = self._sizes[geometry] = sum(p.buffer_size for p in frame.planes)
        self._buffer.append((i, frame, size))
        self._buffer_bytes += size
        while self._buffer_bytes > BUFFER_BYTES and len(self._buffer) > 1:
            j, old, old_size = self._buffer.popleft()
            self._buffer_bytes -= old_size
            if j in state.wanted and j not in self._held and self._held_bytes < HELD_BYTES:
                self._hold(j, old.to_ndarray(format="rgb24"), state)

    def _hold(self, j: int, rgb: np.ndarray, state: _State) -> _Converted:
        crop = resize_and_crop(rgb[None], self.pixels)[0]
        thumb = thumbnail_or_none(rgb) if self.thumbnails and j in state.middles else None
        converted = self._held[j] = _Converted(crop, thumb)
        self._held_bytes += crop.nbytes
        return converted

    def _drop_held(self, j: int) -> None:
        converted = self._held.pop(j, None)
        if converted is not None:
            self._held_bytes -= converted.crop.nbytes

    def _emit(self, plan: SegmentPlan, state: _State) -> tuple[SegmentPlan, np.ndarray, bytes | None]:
        indices = sample_frame_indices(plan.frame_start, plan.frame_end, self.num_frames)
        middle = indices[len(indices) // 2]
        buffered = {j: f for j, f, _ in self._buffer}
        missing = []
        for j in sorted(set(indices)):
            have = self._held.get(j)
            if have is not None and (have.thumbnail is not None or j != middle or not self.thumbnails):
                continue
            if j in buffered:
                self._drop_held(j)
                self._hold(j, buffered[j].to_ndarray(format="rgb24"), state)
            else:
                missing.append(j)
        if missing:
            for j, rgb in zip(missing, self._seek(missing), strict=True):
                self._drop_held(j)
                self._hold(j, rgb, state)
        crops = np.stack([self._held[j].crop for j in indices])
        thumb = self._held[middle].thumbnail
        # Later segments start at or after this one's end: nothing before it is wanted again.
        for j in [j for j in self._held if j < plan.frame_end]:
            self._drop_held(j)
        while self._buffer and self._buffer[0][0] < plan.frame_end:
            self._buffer_bytes -= self._buffer.popleft()[2]
        return plan, crops, thumb

    def _seek(self, indices: list[int]) -> list[np.ndarray]:
        """Frames no longer in hand, decoded again by seeking (PyAV, the same frames); exact or abandoned."""
        try:
            if self._seeker is None:
                self._seeker = PyAVDecoder().open(self.path)
            frames = list(self._seeker.iter_frames(indices))
        except VideoError as exc:
            raise Abandoned(f"seeking: {exc}") from exc
        if self._seeker.warnings or len(frames) != len(indices):
            raise Abandoned("a seek did not return the exact frames")
        return frames


def _timed(packet: Any) -> bool:
    return bool(packet.size) and (packet.pts is not None or packet.dts is not None)
