"""Decoding only what sampled frames need, against the two wrong patterns, on one long clip.

X-CLIP samples 8 frames per 10 s segment. The indexer's decoders seek once per keyframe group and decode
forward from the keyframe; the wrong patterns are one seek per frame (each sample decodes its group again
from the keyframe) and decoding every frame from the start up to the last sample. Prints CPU seconds per
pattern and the ratio to the indexer's own pattern, for decord and PyAV:

    flock /work/bench.lock python scripts/bench_decode.py --seconds 60 --height 720 --gop 50
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn: Callable[[], Any]) -> float:
    fn()  # warm the page cache and the libraries
    started = cpu()
    fn()
    return cpu() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--gop", type=int, default=50)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "xclip-bench")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_index import _write_clip

    width = args.height * 16 // 9
    path = args.cache / f"long-{args.seconds}s-{width}x{args.height}-g{args.gop}.mp4"
    if not path.exists():
        args.cache.mkdir(parents=True, exist_ok=True)
        _write_clip((str(path), args.seconds, width, args.height, args.gop, 7))

    import av
    import decord
    import numpy as np

    from indexer.decoders import DECODERS, read_frames
    from indexer.segments import plan_segments
    from xclip_search.sampling import sample_frame_indices

    n = len(decord.VideoReader(str(path), num_threads=1))
    plans = plan_segments(n, 25.0, 10)
    wanted = sorted({i for p in plans for i in sample_frame_indices(p.frame_start, p.frame_end, 8)})

    def ours(name: str) -> Callable[[], Any]:
        def run() -> Any:
            video = DECODERS[name].open(str(path))
            try:
                return read_frames(video, wanted)
            finally:
                video.close()

        return run

    def decord_seek_per_frame() -> Any:
        vr = decord.VideoReader(str(path), num_threads=1)
        out = []
        for i in wanted:
            vr.seek(0)  # forget the position: every frame starts from its keyframe again
            out.append(vr.get_batch([i]).asnumpy()[0])
        return np.stack(out)

    def decord_every_frame() -> Any:
        vr = decord.VideoReader(str(path), num_threads=1)
        frames = vr.get_batch(list(range(wanted[-1] + 1))).asnumpy()
        return frames[wanted]

    def pyav_every_frame() -> Any:
        keep = set(wanted)
        out = []
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1
            for i, frame in enumerate(container.decode(stream)):
                if i in keep:
                    out.append(frame.to_ndarray(format="rgb24"))
                if i >= wanted[-1]:
                    break
        return np.stack(out)

    def pyav_seek_per_frame() -> Any:
        video: Any = DECODERS["pyav"].open(str(path))
        out = []
        try:
            for i in wanted:
                video._frames = None  # forget the position: each frame is sought from its keyframe again
                out.append(read_frames(video, [i])[0])
        finally:
            video.close()
        return np.stack(out)

    print(f"{path.name}: {n} frames, {len(wanted)} sampled (8 per 10 s segment)")
    started = time.perf_counter()
    patterns = {
        "decord": [("one seek per frame", decord_seek_per_frame), ("every frame to the last", decord_every_frame)],
        "pyav": [("one seek per frame", pyav_seek_per_frame), ("every frame to the last", pyav_every_frame)],
    }
    for backend, wrong in patterns.items():
        mine = ours(backend)
        base = timed(mine)
        print(f"{backend:<7} keyframe groups (ours) {base:7.2f} CPU s")
        for label, fn in wrong:
            cost = timed(fn)
            print(f"{backend:<7} {label:<24} {cost:7.2f} CPU s  {cost / base:5.2f}x")
    print(f"({time.perf_counter() - started:.0f} s wall)")


if __name__ == "__main__":
    main()
