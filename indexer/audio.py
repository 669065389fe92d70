"""A video's sound as Whisper hears it: the first audio stream, 16 kHz mono, decoded with PyAV (no torch).

Runs in the isolated decode workers (`worker`, `framejobs`), because a hostile audio stream can crash or
exhaust a decoder like a video stream can. The samples travel back as 16-bit PCM (half the bytes of float32:
an hour is 115 MB) and are scaled to float32 on the model side (`as_float`). A file longer than `MAX_AUDIO_S`
is cut there: transcription stops at that point rather than a worker holding gigabytes of sound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from xclip_search.errors import VideoError

SAMPLE_RATE = 16_000
#: Longest sound decoded for transcription (6 h: 690 MB of 16-bit samples in a worker, within its memory cap).
MAX_AUDIO_S = 6 * 3600.0


@dataclass(frozen=True)
class DecodedAudio:
    """16 kHz mono 16-bit samples of a file's first audio stream (empty when the file has none)."""

    samples: np.ndarray
    has_stream: bool
    truncated: bool = False

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def decode_audio(
    path: str, *, max_seconds: float = MAX_AUDIO_S, on_chunk: Callable[[], None] | None = None
) -> DecodedAudio:
    """Decode and resample `path`'s first audio stream; raises `VideoError` (the reason, without the path) when
    it cannot be decoded.

    A file without an audio stream is not an error (``has_stream`` False, no samples): it has nothing to say.
    `on_chunk` is called after each decoded packet (progress for the caller's timeout).
    """
    import av

    limit = int(max_seconds * SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = packets = 0
    truncated = False
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                return DecodedAudio(np.zeros(0, np.int16), has_stream=False)
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for packet in container.demux(stream):
                packets += packet.size > 0
                for frame in packet.decode():
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))
                        total += chunks[-1].shape[0]
                if on_chunk is not None:
                    on_chunk()
                if total >= limit:
                    truncated = True
                    break
            if not truncated:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().reshape(-1))
    except (av.FFmpegError, ValueError, OSError) as exc:
        from .decoders import clean_message

        raise VideoError(f"the audio cannot be decoded: {clean_message(exc)}") from exc
    if packets and not chunks:
        raise VideoError("the audio stream decoded to no samples")
    samples = np.concatenate(chunks).astype(np.int16, copy=False) if chunks else np.zeros(0, np.int16)
    return DecodedAudio(samples[:limit], has_stream=True, truncated=truncated)


def as_float(samples: np.ndarray) -> np.ndarray:
    """16-bit samples as the float32 waveform in [-1, 1] that Whisper's feature extractors take."""
    return samples.astype(np.float32) / 32768.0
