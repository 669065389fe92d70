#!/usr/bin/env python
"""Watching: how long after a burst of copies the files are indexed, against a plain `index` run of the same files.

    python scripts/bench_watch.py --files 2000

Copies --files small generated clips (distinct bytes, 20 folders) into a folder that `indexer.watch.Watcher`
watches, and measures the time from the last copy to the last file indexed, and how many runs the burst took
(one is the goal). The baseline is one `run_index` of the same files into a fresh index, in the same process, so
the ratio shows what watching adds (the settle time, event handling) on this machine. A tiny random X-CLIP keeps
the model's share small: the figures are about the watcher, not the model.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

from indexer.pipeline import IndexOptions, run_index
from indexer.watch import BatchResult, Watcher, WatchSettings
from xclip_search.testing import make_tiny_checkpoint, synthetic_frames, write_video


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--settle", type=float, default=2.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="xclip-bench-watch-"))
    try:
        ckpt = make_tiny_checkpoint(work / "ckpt")
        src = work / "src.mp4"
        write_video(src, synthetic_frames(30, 48, 80, seed=1))
        options = IndexOptions(segment_seconds=0, workers=1)
        lib = work / "lib"
        lib.mkdir()
        results: list[BatchResult] = []
        watcher = Watcher(
            [lib],
            work / "idx",
            model=str(ckpt),
            options=options,
            settings=WatchSettings(settle_s=args.settle),
            on_batch=results.append,
        )
        stop = threading.Event()
        thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
        thread.start()
        watcher.caught_up.wait()
        t0 = time.monotonic()
        for i in range(args.files):
            folder = lib / f"d{i % 20}"
            folder.mkdir(exist_ok=True)
            shutil.copy(src, folder / f"c{i:05d}.mp4")
            with open(folder / f"c{i:05d}.mp4", "ab") as f:  # distinct content: no file is taken for a move
                f.write(i.to_bytes(4, "little"))
        copied = time.monotonic()
        while sum(r.report.to_dict()["indexed"] for r in results[1:]) < args.files:
            time.sleep(0.05)
        done = time.monotonic()
        stop.set()
        thread.join(60)
        started = time.monotonic()
        plain = run_index([lib], work / "idx-plain", model=str(ckpt), options=options)
        baseline = time.monotonic() - started
        assert plain.to_dict()["indexed"] == args.files
        watched = done - copied
        print(
            f"{args.files} files copied in {copied - t0:.1f} s; indexed {watched:.1f} s after the last copy in "
            f"{len(results) - 1} run(s); a plain index run of the same files: {baseline:.1f} s; "
            f"ratio {watched / baseline:.2f} (settle {args.settle:g} s)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
