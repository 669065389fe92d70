"""Embed video files without indexing them: for tagging new videos and for query by example.

The same isolation as indexing (supervised decode workers, per-file failures) and the same frames and pixels,
so a file's embeddings here equal the ones an index would store for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from xclip_search.checkpoint import Checkpoint
from xclip_search.encoder import VideoEmbeddings, XClipEncoder

from .extract import CropNormalizer, Extracted, ExtractSpec
from .feed import ModelFeed
from .pool import DecodePool, FileDone, SegmentReady
from .segments import Segmentation


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
    segmentation: Segmentation | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    encoder: XClipEncoder | None = None,
) -> Iterator[EmbeddedFile]:
    """Yield one `EmbeddedFile` per path, in completion order, cut into segments by `segmentation` (default:
    the default of a new index; pass an index's recorded settings to cut a file as that index did).

    Batches go through `ModelFeed`: on a GPU, pinned buffers and a copy stream overlap each batch's transfer
    with the previous one's compute, and without a `batch_size` it is chosen from the free GPU memory (8 on CPU).
    """
    enc = encoder or XClipEncoder(checkpoint)
    feed: ModelFeed[int] = ModelFeed(enc, checkpoint.pixels, batch_size=batch_size or 8, auto_batch=batch_size is None)
    spec = ExtractSpec(num_frames=checkpoint.num_frames, pixels=checkpoint.pixels).with_segmentation(
        segmentation or Segmentation()
    )
    n_workers = min(workers if workers is not None else 2, len(paths))
    segments: dict[str, list[SegmentReady]] = {}
    to_pixels = CropNormalizer(spec.pixels)
    with DecodePool(spec, n_workers) as pool:
        for event in pool.run(list(paths)):
            if isinstance(event, SegmentReady):
                kept = segments.setdefault(event.path, [])
                if kept and kept[-1].attempt != event.attempt:
                    kept.clear()  # the worker switched decoders midway
                kept.append(event)
                continue
            got = segments.pop(event.path, [])
            if not isinstance(event, FileDone) or event.summary is None or not got:
                yield EmbeddedFile(event.path, None, None, getattr(event, "reason", "no segments"))
                continue
            crops = np.stack([s.crops for s in got])
            parts, start = [], 0
            while start < len(crops):
                step = feed.batch_size  # may grow after the first batch on a GPU
                parts += feed.push(crops[start : start + step], start)
                start += step
            parts = sorted(parts + feed.drain(), key=lambda part: part[0])
            emb = VideoEmbeddings(v=np.concatenate([p.v for _, p in parts]), z=np.concatenate([p.z for _, p in parts]))
            pixels = to_pixels(crops)
            s = event.summary
            extracted = Extracted(
                path=event.path,
                info=s.info,
                codec=s.codec,
                duration_s=s.duration_s,
                decoder=s.decoder,
                segments=[x.plan for x in got],
                pixels=pixels,
                notes=s.notes,
                warnings=event.warnings,
            )
            yield EmbeddedFile(event.path, extracted, emb, None)
