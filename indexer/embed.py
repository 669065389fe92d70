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
    batch_size: int = 8,
    encoder: XClipEncoder | None = None,
) -> Iterator[EmbeddedFile]:
    """Yield one `EmbeddedFile` per path, in completion order, cut into segments by `segmentation` (default:
    the default of a new index; pass an index's recorded settings to cut a file as that index did)."""
    enc = encoder or XClipEncoder(checkpoint)
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
            pixels = to_pixels(np.stack([s.crops for s in got]))
            parts = [enc.encode_videos(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]
            emb = VideoEmbeddings(v=np.concatenate([p.v for p in parts]), z=np.concatenate([p.z for p in parts]))
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
