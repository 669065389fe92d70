"""Video decoders behind one small interface: decord (default) and PyAV (second backend, retry path).

Every X-CLIP release was evaluated on frames decoded by decord, so it is the default; PyAV decodes the same
frames (checked on every test clip) and takes over when decord fails on a file. Both number frames the same
way: frame ``i`` is the ``i``-th video packet in presentation order, so both report the same count ``n`` for the
sampling formula (DESIGN.md §2).

Both decode only what the sampled frames need: for sorted indices they seek once per keyframe group and decode
forward from the keyframe, never every frame up to the last sample, and never one seek per frame. decord's
``get_batch`` does exactly this (it seeks when the next index lies in another keyframe group and otherwise
skips forward, discarding skipped frames before colour conversion); the PyAV backend does the same with a
packet index built by demuxing (no decoding) when the file is opened.

Frames are returned one at a time (`iter_frames`) so a worker holds one full-resolution frame at a time,
whatever the resolution. No torch here: decoders run inside worker processes.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from xclip_search.errors import VideoError


@dataclass(frozen=True)
class VideoInfo:
    """What a decoder reports about a file (``width``/``height`` may come from the container header)."""

    num_frames: int
    fps: float
    width: int
    height: int


class OpenVideo(Protocol):
    info: VideoInfo
    warnings: int

    def iter_frames(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        """RGB24 ``(H, W, 3)`` uint8 frames for sorted `indices`, in order, one at a time."""
        ...

    def close(self) -> None: ...


class Decoder(Protocol):
    name: str

    def open(self, path: str) -> OpenVideo: ...


def read_frames(video: OpenVideo, indices: Sequence[int]) -> np.ndarray:
    """All frames for sorted `indices` as one ``(len, H, W, 3)`` array (tests, small files)."""
    return np.stack(list(video.iter_frames(indices)))


# -- decord ---------------------------------------------------------------------------------------------------


class DecordDecoder:
    name = "decord"

    def open(self, path: str) -> OpenVideo:
        return _DecordVideo(path)


class _DecordVideo:
    def __init__(self, path: str) -> None:
        try:
            import decord
        except ImportError as exc:  # pragma: no cover - platform without decord wheels
            raise VideoError("decord is not installed") from exc
        self.warnings = 0
        try:
            self._vr: Any = decord.VideoReader(path, num_threads=1)
            n = len(self._vr)
            fps = float(self._vr.get_avg_fps())
        except Exception as exc:  # decord raises its own DECORDError and RuntimeError
            raise VideoError(f"cannot open the file: {clean_message(exc)}") from exc
        if n <= 0:
            raise VideoError("no video frames")
        # decord exposes no frame size without decoding a frame; the caller fills it from the header.
        self.info = VideoInfo(num_frames=n, fps=fps, width=0, height=0)

    def iter_frames(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        # One index per call keeps one frame in memory; decord keeps its position between calls, so the
        # seek-per-keyframe-group pattern of a single get_batch(indices) call is unchanged.
        for i in indices:
            try:
                frame = self._vr.get_batch([int(i)]).asnumpy()[0]
            except Exception as exc:
                raise VideoError(f"cannot decode frame {i}: {clean_message(exc)}") from exc
            yield np.asarray(frame, dtype=np.uint8)

    def close(self) -> None:
        self._vr = None


# -- PyAV -----------------------------------------------------------------------------------------------------


class PyAVDecoder:
    name = "pyav"

    def __init__(self, *, forward_only: bool = False) -> None:
        self.forward_only = forward_only

    def open(self, path: str) -> OpenVideo:
        return _PyAVVideo(path, forward_only=self.forward_only)


class _PyAVVideo:
    """PyAV with a packet index: frame ``i`` is the ``i``-th smallest packet timestamp, as in decord.

    Decoding is tolerant, because this backend is the retry path for files decord rejects: a packet the codec
    cannot decode is skipped and counted as a warning, and a sampled frame that never comes out of the decoder
    is replaced by the next frame that does (also a warning). A file without a single decodable frame fails.
    When a seek lands past its target (containers without an index seek by timestamp search), the file is
    decoded forward from its start instead; `forward_only` does that from the outset.
    """

    def __init__(self, path: str, *, forward_only: bool = False) -> None:
        self.path = path
        self.warnings = 0
        self.forward_only = forward_only
        self._container: Any = self._open_container(None)
        try:
            rate = self._stream.average_rate or self._stream.guessed_rate
            fps = float(rate) if rate else 0.0
            timestamps: list[int] = []
            keys: list[int] = []
            for packet in self._container.demux(self._stream):
                ts = packet.pts if packet.pts is not None else packet.dts
                if packet.size == 0 or ts is None:
                    continue
                timestamps.append(int(ts))
                if packet.is_keyframe:
                    keys.append(int(ts))
        except Exception as exc:
            self.close()
            raise VideoError(f"cannot read the packets: {clean_message(exc)}") from exc
        if not timestamps:
            self.close()
            raise VideoError("no video frames")
        self._pts = sorted(timestamps)
        self._keys = sorted(keys) or [self._pts[0]]
        cc = self._stream.codec_context
        self.info = VideoInfo(num_frames=len(self._pts), fps=fps, width=int(cc.width or 0), height=int(cc.height or 0))
        self._frames: Iterator[Any] | None = None
        self._group = self._keys[0]  # the keyframe group the decoder is in
        self._last: Any = None  # the last frame taken from the decoder since the last seek
        self._last_pts: int | None = None
        self._settled = True  # False between a seek and the first decoded frame

    def _open_container(self, previous: Any) -> Any:
        """Open the file (again: reopening is the exact way back to its start) and select its video stream."""
        import av

        if previous is not None:
            previous.close()
        try:
            container = av.open(self.path, metadata_errors="ignore")
        except Exception as exc:  # av.error.FFmpegError and friends
            raise VideoError(f"cannot open the file: {clean_message(exc)}") from exc
        if not container.streams.video:
            container.close()
            raise VideoError("no video stream")
        self._stream: Any = container.streams.video[0]
        self._stream.thread_count = 1
        return container

    def _keyframe_for(self, pts: int) -> int:
        k = bisect.bisect_right(self._keys, pts) - 1
        return self._keys[max(k, 0)]

    def _seek(self, key_pts: int) -> None:
        if key_pts <= self._keys[0] or self.forward_only:
            self._container = self._open_container(self._container)  # the start: exact in every container
        else:
            self._container.seek(key_pts, stream=self._stream, backward=True, any_frame=False)
        self._frames = self._decode()
        self._group, self._last, self._last_pts, self._settled = key_pts, None, None, False

    def _decode(self) -> Iterator[Any]:
        import av

        for packet in self._container.demux(self._stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                # Right after a seek into a stream the decoder may see references it never got: not the file's fault.
                self.warnings += self._settled
                continue
            for frame in frames:
                self._settled = True
                yield frame

    def iter_frames(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        for i in indices:
            if not 0 <= i < len(self._pts):
                raise VideoError(f"frame {i} is out of range (the file has {len(self._pts)} frames)")
            target = self._pts[i]
            if self._last is None or self._last_pts != target:
                key = self._keyframe_for(target)
                behind = self._last_pts is not None and target < self._last_pts
                ahead = key > self._group and not self.forward_only
                if self._frames is None or behind or ahead:
                    self._seek(key)  # another keyframe group (or backwards); within a group, decode forward
                self._take(target)
            yield np.asarray(self._last.to_ndarray(format="rgb24"))

    def _take(self, target: int) -> None:
        """Decode forward to the frame at `target` (or a stand-in, counted as a warning); it becomes `_last`."""
        assert self._frames is not None
        first = self._last is None  # nothing decoded since the last seek
        try:
            for frame in self._frames:
                pts = frame.pts
                if pts is not None and pts > target and first and not self.forward_only:
                    # The seek landed past the target: this container seeks imprecisely; go forward-only.
                    self.forward_only = True
                    self._seek(self._keys[0])
                    self._take(target)
                    return
                first = False
                if pts is None or pts < target:
                    continue
                self._last, self._last_pts = frame, pts
                self._group = max(self._group, self._keyframe_for(pts))
                if pts > target:
                    self.warnings += 1  # the sampled frame never came out of the decoder: use the next one
                return
        except VideoError:
            raise
        except Exception as exc:
            raise VideoError(f"cannot decode: {clean_message(exc)}") from exc
        if first and not self.forward_only:
            self.forward_only = True  # the seek landed where nothing decodes: start over from the beginning
            self._seek(self._keys[0])
            self._take(target)
            return
        if self._last is None:
            raise VideoError("no decodable frame at or after the sampled position")
        self.warnings += 1  # past the last decodable frame: repeat it

    def close(self) -> None:
        container, self._container = self._container, None
        self._frames = None
        self._last = None
        if container is not None:
            container.close()


DECODERS: dict[str, Decoder] = {"decord": DecordDecoder(), "pyav": PyAVDecoder()}
# Containers without an index (MPEG program and transport streams) seek by searching timestamps and land
# imprecisely: decord then silently returns other frames than asked for (measured on MPEG-PS: index 33 gave
# frame 9). Such files are decoded forward from the start with PyAV, converting only the sampled frames.
FORWARD_ONLY = PyAVDecoder(forward_only=True)
DEFAULT_DECODERS = ("decord", "pyav")

_NOISE = [
    re.compile(r"\[\d\d:\d\d:\d\d\] \S+?:\d+: "),  # decord: [time] source.cc:line:
    re.compile(r"\[Errno -?\d+\] "),  # PyAV: the FFmpeg error number
    re.compile(r": '[^']*'(?=;|$)"),  # PyAV: the file name after the message (the caller knows it)
    re.compile(r"^\[[^\]]*\] "),  # decord: [path] before its message
    re.compile(r"Check failed: "),
]


def clean_message(exc: BaseException) -> str:
    """The useful first line of a decoder error, without source lines, error numbers and the file name."""
    text = str(exc).strip()
    for pattern in _NOISE:
        text = pattern.sub("", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


#: Decoders registered by name but imported only when asked for (their packages are optional).
LAZY_DECODERS = ("nvdec",)


def get_decoder(name: str) -> Decoder:
    """A decoder by name; ``module:attribute`` names a decoder object defined elsewhere (test fault injection)."""
    if name in DECODERS:
        return DECODERS[name]
    if name == "nvdec":
        from .gpudecode import NVDEC_DECODER

        return NVDEC_DECODER
    if ":" in name:
        import importlib

        module, _, attr = name.partition(":")
        decoder: Decoder = getattr(importlib.import_module(module), attr)
        return decoder
    raise VideoError(f"Invalid decoder ({name}). Supported values are {', '.join([*DECODERS, *LAZY_DECODERS])}.")


def decoder_chain(first: str) -> tuple[str, ...]:
    """The decoders a run tries per file when the user picks `first`: the CPU decoders stay behind it as the
    retry path (a codec NVDEC lacks falls back to decord and PyAV). ``nvdec`` is checked here, once, so a
    machine without the GPU or the package gets one error instead of a fallback note on every file."""
    if first == "nvdec":
        from .gpudecode import import_nvc

        import_nvc()
        return ("nvdec", *DEFAULT_DECODERS)
    get_decoder(first)
    return tuple(dict.fromkeys((first, *DEFAULT_DECODERS))) if first != "pyav" else ("pyav",)
