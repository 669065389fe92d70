"""Cheap checks before any decoding: is it a video at all, and is it within the configured limits?

Reading the container header costs milliseconds; decoding a hostile file (an 8192×8192 stream in a 200 KB
file, a 100-hour screen recording) can cost gigabytes and minutes. So a file is probed first and refused on
its header's pixel count or duration, and the decoder's frame count is checked against a frame limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from xclip_search.errors import VideoError

from .decoders import VideoInfo


@dataclass(frozen=True)
class Limits:
    """Refusal thresholds, all overridable from the command line."""

    max_pixels: int = 7680 * 4320
    max_duration_s: float = 6 * 3600.0
    max_frames: int = 2_000_000

    def check_size(self, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise VideoError(f"frame size {width}x{height} exceeds the limit of {self.max_pixels} pixels")

    def check_frames(self, info: VideoInfo) -> None:
        if info.num_frames > self.max_frames:
            raise VideoError(f"{info.num_frames} frames exceed the limit of {self.max_frames}")
        self.check_size(info.width, info.height)


@dataclass(frozen=True)
class Probe:
    width: int
    height: int
    duration_s: float | None
    codec: str | None


def probe(path: str, limits: Limits) -> Probe:
    """Read the container header; raises `VideoError` for non-videos and files over the limits."""
    import av

    try:
        with av.open(path, metadata_errors="ignore") as container:
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
    except VideoError:
        raise
    except Exception as exc:  # av.error.InvalidDataError and friends
        text = str(exc).strip().splitlines()
        raise VideoError(f"not a readable video: {text[0][:200] if text else type(exc).__name__}") from exc
    limits.check_size(width, height)
    if duration is not None and duration > limits.max_duration_s:
        raise VideoError(f"duration {duration:.0f} s exceeds the limit of {limits.max_duration_s:.0f} s")
    return Probe(width=width, height=height, duration_s=duration, codec=codec)
