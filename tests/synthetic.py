"""Indexes of synthetic segments written through the real `IndexWriter`, for query-engine tests.

Decoding and encoding videos is what makes index tests slow; the query engine only needs ``v``, ``Z`` and catalog
rows. Vectors here are clustered (a few topics) so that ANN indexes have structure to find.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from xclip_search.checkpoint import ModelIdentity
from xclip_search.store.catalog import SegmentRecord, VideoRecord
from xclip_search.store.writer import IndexWriter


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread() -> Iterator[None]:
    """FAISS with 2 OpenMP threads on a shared 2-core machine waits on preempted threads (5x slower training);
    the tests run it single-threaded. Import this fixture into a test module to apply it."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class Video:
    path: str
    v: np.ndarray  # (S, D) unit
    z: np.ndarray  # (S, N, D)
    duration: float = 0.0
    width: int = 640
    height: int = 360
    seconds: float = 10.0
    gaps: Sequence[int] = ()  # segment positions preceded by a gap (not adjacent to the previous one)
    shots: Sequence[int] | None = None  # each segment's shot (shot-aligned segmentation); None: not recorded
    ids: list[int] = field(default_factory=list)


def clustered_videos(
    identity: ModelIdentity, count: int, *, segments: int = 4, topics: int = 8, seed: int = 0, prefix: str = "/lib"
) -> list[Video]:
    rng = np.random.default_rng(seed)
    d, n = identity.embed_dim, identity.num_tokens
    centers = unit(rng.standard_normal((topics, d)))
    out = []
    for i in range(count):
        k = i % topics
        base = centers[k] + 0.4 * unit(rng.standard_normal(d))
        v = unit(base + 0.15 * rng.standard_normal((segments, d)))
        z = rng.standard_normal((segments, n, d)).astype(np.float32)
        sub = "even" if i % 2 == 0 else "odd"
        out.append(Video(f"{prefix}/{sub}/topic{k}/video{i:04d}.mp4", v, z, duration=10.0 * segments + i))
    return out


def write_videos(
    directory: Path,
    identity: ModelIdentity,
    videos: Sequence[Video],
    *,
    z_dtype: str = "float32",
    flush_every: int = 0,
    ann: str | None = "flat",
) -> None:
    """Add `videos` (filling their ``ids``), then publish the ANN of kind `ann` (None: leave it as is)."""
    with IndexWriter(directory, identity, z_dtype=z_dtype) as writer:
        for video in videos:
            count = len(video.v)
            first = writer.reserve_ids(count)
            segs = []
            start = 0.0
            for j in range(count):
                if j in video.gaps:
                    start += 5.0
                segs.append(
                    SegmentRecord(
                        seq=j,
                        start_s=start,
                        end_s=start + video.seconds,
                        frame_start=j * 250,
                        frame_end=(j + 1) * 250,
                        id=first + j,
                        shot=None if video.shots is None else video.shots[j],
                    )
                )
                start += video.seconds
            video.ids = [s.id for s in segs]
            record = VideoRecord(
                path=video.path,
                size=1000 + count,
                mtime_ns=1,
                status="indexed",
                duration_s=video.duration or start,
                fps=25.0,
                num_frames=250 * count,
                width=video.width,
                height=video.height,
                codec="h264",
            )
            writer.add(record, segs, video.v, video.z)
            if flush_every and writer.pending_segments >= flush_every:
                writer.flush()
        writer.flush()
        if ann is not None:
            writer.publish_ann(force=True, kind=ann)
