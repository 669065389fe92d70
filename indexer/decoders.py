"""Video decoders behind one small interface: decord (default) and PyAV (second backend, retry path).

Every X-CLIP release was evaluated on frames decoded by decord, so it is the default; PyAV decodes the same
frames and takes over when decord fails on a file. Both report the frame count the sampling formula uses and
return RGB24 frames for a list of indices. No torch here: decoders run inside worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from xclip_search.errors import VideoError


@dataclass(frozen=True)
class VideoInfo:
    """What a decoder reports about a file."""

    num_frames: int
    fps: float
    width: int
    height: int


class Decoder(Protocol):
    name: str

    def open(self, path: str) -> OpenVideo: ...


class OpenVideo(Protocol):
    info: VideoInfo

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        """RGB24 frames ``(len(indices), H, W, 3)`` uint8 for sorted, de-duplicated `indices`."""
        ...

    def close(self) -> None: ...


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
        try:
            self._vr = decord.VideoReader(path, num_threads=1)
            n = len(self._vr)
            fps = float(self._vr.get_avg_fps())
            h, w = self._vr[0].shape[:2] if n else (0, 0)
        except VideoError:
            raise
        except Exception as exc:  # decord raises its own DECORDError and RuntimeError
            raise VideoError(f"decord cannot open the file: {_first_line(exc)}") from exc
        if n <= 0:
            raise VideoError("no video frames")
        self.info = VideoInfo(num_frames=n, fps=fps, width=int(w), height=int(h))

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        try:
            self._vr.seek(0)
            return np.asarray(self._vr.get_batch(list(indices)).asnumpy(), dtype=np.uint8)
        except Exception as exc:
            raise VideoError(f"decord cannot decode frames: {_first_line(exc)}") from exc

    def close(self) -> None:
        del self._vr


class PyAVDecoder:
    name = "pyav"

    def open(self, path: str) -> OpenVideo:
        return _PyAVVideo(path)


class _PyAVVideo:
    """Sequential PyAV decoding: counts frames the way decord's index does (decodable video frames)."""

    def __init__(self, path: str) -> None:
        import av

        self.path = path
        try:
            with av.open(path) as container:
                if not container.streams.video:
                    raise VideoError("no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                fps = float(rate) if rate else 0.0
                n = 0
                w = h = 0
                for frame in container.decode(stream):
                    if n == 0:
                        w, h = frame.width, frame.height
                    n += 1
        except VideoError:
            raise
        except Exception as exc:  # av.error.FFmpegError and friends
            raise VideoError(f"PyAV cannot decode the file: {_first_line(exc)}") from exc
        if n == 0:
            raise VideoError("no video frames")
        self.info = VideoInfo(num_frames=n, fps=fps, width=w, height=h)

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        import av

        wanted = sorted(set(indices))
        out: dict[int, np.ndarray] = {}
        try:
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                for i, frame in enumerate(container.decode(stream)):
                    if i in wanted:
                        out[i] = frame.to_ndarray(format="rgb24")
                    if i >= wanted[-1]:
                        break
        except Exception as exc:
            raise VideoError(f"PyAV cannot decode frames: {_first_line(exc)}") from exc
        missing = [i for i in wanted if i not in out]
        if missing:
            raise VideoError(f"PyAV decoded fewer frames than expected (missing {missing[:3]})")
        return np.stack([out[i] for i in indices])

    def close(self) -> None:
        pass


DECODERS: dict[str, Decoder] = {"decord": DecordDecoder(), "pyav": PyAVDecoder()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
