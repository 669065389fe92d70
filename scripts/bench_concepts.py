#!/usr/bin/env python
"""Concepts at scale: learning from 8 examples over a 100k-segment index, and scoring it over the whole index.

    python scripts/bench_concepts.py [--segments 100000] [--workdir /tmp/xc-bench] [--json]

Builds a real index (IndexWriter: catalog, shards, ANN) of synthetic segments with a tiny random-init X-CLIP
(clustered ``v``: videos belong to topics, as in scripts/bench_query.py) and measures, in one run:

- `Index.learn` from 8 indexed example segments (negatives: the default sample of 1,024 segments of the index,
  read by memory map; X-CLIP's prompted score of the name for all of them; the fit; 5-fold held-out accuracy),
  against a plain text search on the same index as the baseline (the machine may be shared: read the ratio);
- the fit alone at the base model's width (D = 512, 1,032 rows), where the classifier's cost is largest;
- scoring the concept over the whole index (`search_concept`, streaming in chunks), and the peak of memory that
  numpy allocates meanwhile (tracemalloc) at a quarter of the index and at all of it: bounded memory means the
  two peaks differ by the per-segment id arrays only, not by the vectors.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xclip_search import Index
from xclip_search.checkpoint import load_checkpoint
from xclip_search.concepts import fit_concept
from xclip_search.store.catalog import SegmentRecord, VideoRecord
from xclip_search.store.writer import IndexWriter
from xclip_search.testing import make_tiny_checkpoint

SEGMENTS_PER_VIDEO = 10


def build(directory: Path, model_dir: Path, segments: int) -> None:
    identity = load_checkpoint(str(model_dir)).identity
    d, n = identity.embed_dim, identity.num_tokens
    rng = np.random.default_rng(0)
    topics = rng.standard_normal((64, d))
    with IndexWriter(directory, identity, z_dtype="float16") as writer:
        for video in range(segments // SEGMENTS_PER_VIDEO):
            base = topics[video % 64] + 0.5 * rng.standard_normal(d)
            v = base + 0.3 * rng.standard_normal((SEGMENTS_PER_VIDEO, d))
            v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
            z = rng.standard_normal((SEGMENTS_PER_VIDEO, n, d)).astype(np.float32)
            first = writer.reserve_ids(SEGMENTS_PER_VIDEO)
            segs = [
                SegmentRecord(
                    seq=j,
                    start_s=10.0 * j,
                    end_s=10.0 * (j + 1),
                    frame_start=250 * j,
                    frame_end=250 * (j + 1),
                    id=first + j,
                )
                for j in range(SEGMENTS_PER_VIDEO)
            ]
            rec = VideoRecord(
                path=f"/bench/topic{video % 64:02d}/video{video:06d}.mp4",
                size=1000,
                mtime_ns=1,
                status="indexed",
                duration_s=10.0 * SEGMENTS_PER_VIDEO,
                fps=25.0,
                num_frames=250 * SEGMENTS_PER_VIDEO,
                width=640,
                height=360,
                codec="h264",
            )
            writer.add(rec, segs, v, z)
            if writer.pending_segments >= 20_000:
                writer.flush()
        writer.flush()
        writer.publish_ann()


def timed(fn, repeat: int = 5) -> float:
    """Median seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def peak_bytes(fn) -> int:
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return int(peak)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="xc-bench-"))
    model_dir = root / "model"
    index_dir = root / f"index-{args.segments}"
    if not model_dir.exists():
        make_tiny_checkpoint(model_dir)
    t0 = time.perf_counter()
    if not index_dir.exists():
        build(index_dir, model_dir, args.segments)
    built = time.perf_counter() - t0
    out: dict[str, object] = {"segments": args.segments, "build_s": round(built, 1)}
    with Index.open(index_dir, model=str(model_dir)) as index:
        index.load_model()
        ids = index.catalog.live_segment_ids(index.generation)
        examples = ids[np.arange(8) * 3]  # 8 segments of the first videos (one topic family)
        index.search("warm up")
        search_s = timed(lambda: index.search("a red circle moving left"))
        learn_s = timed(lambda: index.learn("blicket", [index.moments_of_segments(examples.tolist())], save=False))
        learned = index.learn("blicket", [index.moments_of_segments(examples.tolist())], save=False)
        out["learn_8_examples_s"] = round(learn_s, 4)
        out["text_search_s"] = round(search_s, 4)
        out["learn_over_search"] = round(learn_s / search_s, 2)
        out["text_input"] = learned.row.text
        rng = np.random.default_rng(1)
        pos, neg = rng.standard_normal((8, 512)), rng.standard_normal((1024, 512))
        out["fit_only_d512_s"] = round(timed(lambda: fit_concept(pos, neg, logit_scale=100.0)), 4)
        quarter = np.asarray(ids[: len(ids) // 4])
        engine = index._concept_engine()
        score_all = timed(lambda: engine.rank(learned, ids, top_k=10, per_video=False, min_prob=None), repeat=1)
        out["score_whole_index_s"] = round(score_all, 3)
        out["segments_per_s"] = round(len(ids) / score_all)
        p_quarter = peak_bytes(lambda: engine.rank(learned, quarter, top_k=10, per_video=False, min_prob=None))
        p_all = peak_bytes(lambda: engine.rank(learned, ids, top_k=10, per_video=False, min_prob=None))
        out["peak_bytes_quarter"] = p_quarter
        out["peak_bytes_all"] = p_all
        out["peak_all_over_quarter"] = round(p_all / max(1, p_quarter), 2)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:24s} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
