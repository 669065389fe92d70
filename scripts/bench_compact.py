"""Compaction time per GB of vector data, and the end-of-run check when nothing is to compact (issue 14).

Writes a synthetic index through the real `IndexWriter` with the shapes of X-CLIP base/32 (D = 512, a prompt
context Z of N tokens per segment, float16 by default as ``index`` stores it), in shards of `--shard-rows`,
prunes `--dead` of its videos, then times ``compact`` (rows verified, copied, committed, the ANN rebuilt
separately and reported apart) and the policy check an ``index`` run makes when there is nothing to compact.

    python scripts/bench_compact.py --segments 4000 --dead 0.3
    python scripts/bench_compact.py --segments 19000 --shard-rows 4096    # about 1 GB of vector data

Figures depend on the disk and the page cache: the first compaction after writing reads from the cache.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xclip_search.identity import ModelIdentity  # noqa: E402
from xclip_search.store import compaction  # noqa: E402
from xclip_search.store.catalog import SegmentRecord, VideoRecord  # noqa: E402
from xclip_search.store.writer import IndexWriter  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=4000)
    parser.add_argument("--per-video", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--shard-rows", type=int, default=512)
    parser.add_argument("--dead", type=float, default=0.3)
    parser.add_argument("--z-dtype", default="float16")
    args = parser.parse_args()
    identity = ModelIdentity(
        source="bench", revision=None, config_hash="bench-compact", num_frames=8, image_size=224,
        embed_dim=args.dim, num_tokens=args.tokens,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        idx = Path(tmp) / "idx"
        videos = args.segments // args.per_video
        paths = [f"/lib/video{i:06d}.mp4" for i in range(videos)]
        with IndexWriter(idx, identity, z_dtype=args.z_dtype) as writer:
            for path in paths:
                first = writer.reserve_ids(args.per_video)
                segs = [
                    SegmentRecord(j, 2.0 * j, 2.0 * j + 2, 50 * j, 50 * j + 50, id=first + j)
                    for j in range(args.per_video)
                ]
                record = VideoRecord(path=path, size=1, mtime_ns=1, status="indexed", duration_s=16.0, fps=25.0)
                v = rng.standard_normal((args.per_video, args.dim)).astype(np.float32)
                v /= np.linalg.norm(v, axis=1, keepdims=True)
                z = rng.standard_normal((args.per_video, args.tokens, args.dim)).astype(np.float32)
                writer.add(record, segs, v, z)
                if writer.pending_segments >= args.shard_rows:
                    writer.flush()
            writer.flush()
            writer.publish_ann()
        with IndexWriter(idx, identity) as writer:
            t0 = time.perf_counter()
            report = compaction.maybe_compact(writer, compaction.CompactionPolicy())
            check_s = time.perf_counter() - t0
            if report is None or report.compacted:
                raise SystemExit(
                    f"the written index needed a compaction before any row died ({report and report.reason}): "
                    "use --shard-rows 4096 or more (more than 16 small shards are merged)"
                )
            writer.remove([str(p) for p in rng.choice(paths, int(len(paths) * args.dead), replace=False)])
        with IndexWriter(idx, identity) as writer:
            report = writer.compact(compaction.CompactionPolicy(grace_s=0.0))
            t0 = time.perf_counter()
            writer.publish_ann()
            ann_s = time.perf_counter() - t0
        gb = report.bytes_before / 1e9
        print(f"index: {args.segments} segments, {report.shards_before} shards, {gb * 1000:.0f} MB of vector data")
        print(f"policy check with nothing to compact: {check_s * 1000:.1f} ms")
        print(
            f"compaction: {report.rows_copied} rows copied, {report.rows_dropped} dropped, {report.shards_after} "
            f"shards, {report.seconds:.2f} s = {report.seconds / gb:.1f} s per GB of vector data before; "
            f"ANN rebuild after it {ann_s:.2f} s"
        )


if __name__ == "__main__":
    main()
