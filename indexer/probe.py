"""Cheap checks before any decoding: is it a video at all, and is it within the configured limits?

Reading the container header costs milliseconds; decoding a hostile file (an 8192×8192 stream in a 200 KB
file, a 100-hour screen recording) can cost gigabytes and minutes. So a file is probed first and refused on
its header's pixel count or duration, and the decoder's frame count is checked against a frame limit. The
probe tells FFmpeg to decode nothing while it reads stream parameters (``skip_frame=all``): without it, opening
that 8192×8192 file decodes a first frame and costs 160 MB; with it, 5 MB.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from xclip_search.errors import VideoError, VideoLimitError

from .decoders import VideoInfo, clean_message

# AVFMT_TS_DISCONT: MPEG program/transport streams, whose timestamp seeks land imprecisely (see decoders.py).
_AVFMT_TS_DISCONT = 0x0200


@dataclass(frozen=True)
class Limits:
    """Refusal thresholds, all overridable from the command line."""

    max_pixels: int = 7680 * 4320
    max_duration_s: float = 6 * 3600.0
    max_frames: int = 2_000_000

    def check_size(self, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise VideoLimitError(f"frame size {width}x{height} exceeds the limit of {self.max_pixels} pixels")

    def check_frames(self, info: VideoInfo) -> None:
        if info.num_frames > self.max_frames:
            raise VideoLimitError(f"{info.num_frames} frames exceed the limit of {self.max_frames}")
        self.check_size(info.width, info.height)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Limits:
        return cls(
            max_pixels=int(d["max_pixels"]), max_duration_s=float(d["max_duration_s"]), max_frames=int(d["max_frames"])
        )


@dataclass(frozen=True)
class Probe:
    """What the container header says; `seekable` is False for containers decoded forward only."""

    width: int
    height: int
    duration_s: float | None
    codec: str | None
    container: str
    seekable: bool = True
    fps: float = 0.0
    frames: int = 0  # from the header; 0 when the container does not say

    def estimated_frames(self) -> int:
        """The header's frame count, else duration × rate (dry-run estimates only; decoders count exactly)."""
        if self.frames > 0:
            return self.frames
        return max(1, round((self.duration_s or 0.0) * (self.fps or 25.0)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe(path: str, limits: Limits) -> Probe:
    """Read the container header; raises `VideoError` for non-videos, `VideoLimitError` over the limits."""
    import av
    import av.logging

    try:
        # FFmpeg complains that it does not know the pixel format when told not to decode: not a file warning.
        with av.logging.Capture(), av.open(path, metadata_errors="ignore", options={"skip_frame": "all"}) as container:
            if not container.streams.video:
                raise VideoError("no video stream")
            stream = container.streams.video[0]
            width = int(stream.codec_context.width or 0)
            height = int(stream.codec_context.height or 0)
            codec = stream.codec_context.name
            duration: float | None = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            frames = int(stream.frames or 0)
            fmt = container.format
            name = str(fmt.name)
            seekable = not (int(getattr(fmt, "flags", 0) or 0) & _AVFMT_TS_DISCONT)
    except VideoError:
        raise
    except Exception as exc:  # av.error.InvalidDataError and friends
        raise VideoError(f"not a readable video: {clean_message(exc)}") from exc
    limits.check_size(width, height)
    if duration is not None and duration > limits.max_duration_s:
        raise VideoLimitError(f"duration {duration:.0f} s exceeds the limit of {limits.max_duration_s:.0f} s")
    return Probe(
        width=width,
        height=height,
        duration_s=duration,
        codec=codec,
        container=name,
        seekable=seekable,
        fps=fps,
        frames=frames,
    )
