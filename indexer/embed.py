"""Embed video files without indexing them: for tagging new videos and for query by example.

The same isolation as indexing (decode workers, per-file failures) and the same frames and pixels, so a file's
embeddings here equal the ones an index would store for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from xclip_search.checkpoint import Checkpoint
from xclip_search.encoder import VideoEmbeddings, XClipEncoder

from .extract import Extracted, ExtractSpec
from .segments import DEFAULT_SEGMENT_SECONDS
from .workers import DecodePool


@dataclass
class EmbeddedFile:
    """One file's segments and their ``v``/``Z``, or the reason it could not be read."""

    path: str
    extracted: Extracted | None
    embeddings: VideoEmbeddings | None
    error: str | None


def embed_files(
    paths: Sequence[str],
    checkpoint: Checkpoint,
    *,
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
    workers: int | None = None,
    batch_size: int = 8,
    encoder: XClipEncoder | None = None,
) -> Iterator[EmbeddedFile]:
    """Yield one `EmbeddedFile` per path, in completion order."""
    enc = encoder or XClipEncoder(checkpoint)
    spec = ExtractSpec(num_frames=checkpoint.num_frames, pixels=checkpoint.pixels, segment_seconds=segment_seconds)
    n_workers = min(workers if workers is not None else 2, len(paths))
    with DecodePool(spec, n_workers) as pool:
        for outcome in pool.run(list(paths)):
            ext = outcome.extracted
            if ext is None:
                yield EmbeddedFile(outcome.path, None, None, outcome.error)
                continue
            parts = [enc.encode_videos(ext.pixels[i : i + batch_size]) for i in range(0, len(ext.pixels), batch_size)]
            import numpy as np

            emb = VideoEmbeddings(v=np.concatenate([p.v for p in parts]), z=np.concatenate([p.z for p in parts]))
            yield EmbeddedFile(outcome.path, ext, emb, None)
