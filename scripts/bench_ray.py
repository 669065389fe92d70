"""``index --ray`` throughput with 1 and 2 Ray decode workers, against the single-machine path, in one run.

Builds (or reuses) the generated H.264 library of `bench_index.py`, starts a local Ray cluster on this machine
(one CPU slot per decode worker plus one for the embedding actor), and indexes the library into a fresh index
three times with the same model:

1. the single-machine path (`run_index`, its own choice of decode workers): the baseline;
2. ``run_index_ray`` with 1 decode actor;
3. ``run_index_ray`` with 2 decode actors;

and prints files/s and segments/s for each, end to end (Ray actor start-up and model loading included), when
the first file was committed (start-up: actors, model, first decode), and the ratios. Results reach the committer
in bursts (a shard of files at a time, in the walk's order), so no "steady" rate is derived from them. A run on
a cluster scales with the nodes' cores and GPUs; on this machine the decode actors, the embedding actor and the
driver share its cores, so the ratios say what the distributed path costs or gains here, not on a cluster.
Run it alone:

    flock /work/bench.lock python scripts/bench_ray.py --clips 200 --seconds 10 --segment-seconds 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_index import build_library, build_model  # noqa: E402


class Clock:
    """Progress events with timestamps (when the first file was done: the start-up cost)."""

    def __init__(self) -> None:
        self.done: list[float] = []

    def start(self, total_files: int) -> None:
        pass

    def file_done(self, outcome: Any) -> None:
        self.done.append(time.monotonic())

    def segments_encoded(self, count: int) -> None:
        pass


def measure(label: str, run: Any, lib: Path, work: Path) -> dict[str, Any]:
    idx = work / f"idx-{label.replace(' ', '-')}"
    shutil.rmtree(idx, ignore_errors=True)
    clock = Clock()
    t0 = time.monotonic()
    report = run(lib, idx, clock)
    seconds = time.monotonic() - t0
    files, segments = report.count("indexed"), report.segments
    if report.count("failed"):
        print(f"  {label}: {report.count('failed')} file(s) failed", file=sys.stderr)
    first = clock.done[0] - t0 if clock.done else float("nan")
    shutil.rmtree(idx, ignore_errors=True)
    return {"label": label, "seconds": seconds, "files": files, "segments": segments, "first_s": first}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--gop", type=int, default=50)
    ap.add_argument("--segment-seconds", type=float, default=2.0)
    ap.add_argument("--model", choices=["tiny", "base"], default="tiny")
    ap.add_argument("--files-per-shard", type=int, default=8)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "xclip-bench", help="library cache")
    args = ap.parse_args()

    import ray

    from indexer import IndexOptions, run_index
    from indexer.distributed import RayOptions, run_index_ray

    lib = build_library(args.cache, args.clips, args.seconds, args.width, args.height, args.gop)
    model = str(build_model(args.cache, args.model))
    opts = IndexOptions(segment_seconds=args.segment_seconds)
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    cpus = os.cpu_count() or 1
    load_before = os.getloadavg()[0]

    def single(lib: Path, idx: Path, clock: Clock) -> Any:
        return run_index([lib], idx, model=model, options=opts, progress=clock)

    def distributed(decoders: int) -> Any:
        def run(lib: Path, idx: Path, clock: Clock) -> Any:
            ropts = RayOptions(decode_workers=decoders, embed_workers=1, files_per_shard=args.files_per_shard)
            return run_index_ray([lib], idx, model=model, options=opts, ray_options=ropts, progress=clock)

        return run

    path = os.pathsep.join(p for p in sys.path if p)
    ray.init(num_cpus=3, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        warm = work / "warm-lib"
        warm.mkdir()
        for clip in sorted(lib.glob("clip*.mp4"))[:2]:
            os.link(clip, warm / clip.name)
        measure("warm-up", distributed(1), warm, work)  # worker imports and page cache, not timed
        rows = [
            measure("single machine", single, lib, work),
            measure("ray, 1 decoder", distributed(1), lib, work),
            measure("ray, 2 decoders", distributed(2), lib, work),
        ]
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()[0]

    print(f"library: {args.clips} clips of {args.seconds} s at {args.width}x{args.height}, model {args.model}, ")
    print(f"segments of {args.segment_seconds:g} s; {cpus} CPU(s) on this machine; Ray cluster: 3 CPU slots")
    print(f"load average (1 min) before {load_before:.2f}, after {load_after:.2f}: other work on the machine shares")
    print("the same cores, so compare the ratios of this run, not absolute numbers across runs")
    print()
    print(f"{'run':<18}{'files':>6}{'segments':>10}{'seconds':>9}{'files/s':>9}{'segments/s':>12}{'first file s':>14}")
    for r in rows:
        print(
            f"{r['label']:<18}{r['files']:>6}{r['segments']:>10}{r['seconds']:>9.1f}"
            f"{r['files'] / r['seconds']:>9.2f}{r['segments'] / r['seconds']:>12.1f}{r['first_s']:>14.1f}"
        )
    base, one, two = rows
    print()
    print(f"ray 2 decoders / ray 1 decoder      {one['seconds'] / two['seconds']:6.2f}x  (end to end)")
    print(f"ray 1 decoder  / single machine     {base['seconds'] / one['seconds']:6.2f}x  (end to end)")
    print(f"ray 2 decoders / single machine     {base['seconds'] / two['seconds']:6.2f}x  (end to end)")


if __name__ == "__main__":
    main()
