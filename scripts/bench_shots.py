"""Cut detection: speed and cut recall/precision of the alternatives, measured side by side in one run (issue 15).

Videos with known cuts:

- generated multi-scene videos (`xclip_search.demo.clips.make_scene_video`: scenes of random length, hard cuts),
  written as H.264 like the demo library;
- a real clip with known cuts: ``tests/data/bikes.mp4`` (an edited film: cuts at frames 30, 76, 137, 187, 242,
  checked by eye), followed by ``bigbuckbunny.mp4`` (one shot) and the first 60 frames of bikes again, re-encoded
  at 640x272 (cuts also at 250, 382 and 412);
- ``bigbuckbunny.mp4`` alone: one shot, no cut (false cuts only).

Detectors:

1. ``grid``: this project's detector (`indexer.shots`): every frame decoded, its Y/U/V planes read in place and
   subsampled to a small grid, scored against the previous frame with an adaptive baseline;
2. ``grid-nonref``: the same, letting the decoder skip non-reference frames (most B-frames);
3. ``grid-swscale``: the same scores from frames scaled by FFmpeg's scaler to 48 px wide (``frame.reformat``);
4. ``pyscenedetect``: PySceneDetect's ContentDetector (HSV, threshold 27) on its PyAV backend, downscaled as it
   chooses by default (needs ``pip install scenedetect opencv-python-headless``; set SCENEDETECT_PATH to a
   ``--target`` directory to keep them out of the project's environment);
5. ``keyframes``: the encoder's keyframe placement (x264 puts an I-frame at a scene cut), confirmed by decoding
   only the keyframes and comparing each with the previous one (skip_frame=NONKEY);
6. ``one pass``: what shots mode runs with the CPU decoders (`indexer.shotpass`): the grid detector on exact
   frames (deblocking on) and the sampled frames resized and cropped, from one forward decode. Its cost
   includes the sampling, so it reads against the yardstick below, not against the detectors above.

Also printed: the sampling decode indexing does anyway (fixed 10 s windows, decord, 8 frames per window), so the
detector's cost reads as a fraction of it. Matching allows 1 frame of slack (2 for ``grid-nonref``).

    python scripts/bench_shots.py --videos 12
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from indexer.shots import GRID_WIDTH, find_cuts, frame_scores  # noqa: E402


def synthetic(directory: Path, count: int, seed: int = 7) -> list[tuple[Path, list[int]]]:
    from xclip_search.demo import clips as gen

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        video = gen.make_scene_video(rng, int(rng.integers(3, 8)), fps=12.0, frames_per_scene=(14, 70), size=128)
        path = directory / f"scenes-{i}.mp4"
        gen.write_mp4(path, video.frames, fps=12.0)
        out.append((path, [s.start_frame for s in video.scenes[1:]]))
    return out


def real_concatenation(directory: Path) -> tuple[Path, list[int]]:
    """bikes + bigbuckbunny + bikes[:60] at 640x272, H.264: known cuts."""
    import av
    from PIL import Image

    from xclip_search.demo.clips import write_mp4

    def frames(name: str) -> list[np.ndarray]:
        with av.open(str(ROOT / "tests" / "data" / name)) as c:
            return [
                np.asarray(Image.fromarray(f.to_ndarray(format="rgb24")).resize((640, 272))) for f in c.decode(video=0)
            ]

    bikes, bunny = frames("bikes.mp4"), frames("bigbuckbunny.mp4")
    joined = np.stack(bikes + bunny + bikes[:60])
    path = directory / "bikes-bunny-bikes.mp4"
    write_mp4(path, joined, fps=25.0)
    n1, n2 = len(bikes), len(bikes) + len(bunny)
    return path, [30, 76, 137, 187, 242, n1, n2, n2 + 30]


def grid(path: str) -> list[int]:
    return [c.frame for c in find_cuts(frame_scores(path)[0])]


def grid_nonref(path: str) -> list[int]:
    return [c.frame for c in find_cuts(frame_scores(path, skip_nonref=True)[0])]


def grid_swscale(path: str) -> list[int]:
    import av

    scores = []
    previous = None
    with av.open(path) as c:
        stream = c.streams.video[0]
        stream.thread_count = 1
        for f in c.decode(stream):
            h = max(2, round(GRID_WIDTH * f.height / f.width))
            g = f.reformat(width=GRID_WIDTH, height=h, format="yuv444p")
            cur = np.concatenate([np.frombuffer(p, np.uint8) for p in g.planes]).astype(np.float32)
            same = previous is not None and previous.shape == cur.shape
            scores.append(float(np.minimum(np.abs(cur - previous), 64).mean()) if same else 0.0)
            previous = cur
    return [c.frame for c in find_cuts(np.array(scores, np.float32))]


def pyscenedetect(path: str) -> list[int]:
    from scenedetect import ContentDetector, detect

    scenes = detect(path, ContentDetector(), backend="pyav")
    return [s[0].frame_num for s in scenes[1:]]


def keyframes(path: str) -> list[int]:
    import av

    with av.open(path) as c:
        stream = c.streams.video[0]
        pts = sorted(p.pts for p in c.demux(stream) if p.size and p.pts is not None)
    cuts = []
    previous = None
    with av.open(path) as c:
        stream = c.streams.video[0]
        stream.thread_count = 1
        stream.codec_context.skip_frame = "NONKEY"
        for f in c.decode(stream):
            h = max(2, round(GRID_WIDTH * f.height / f.width))
            g = f.reformat(width=GRID_WIDTH, height=h, format="yuv444p")
            cur = np.concatenate([np.frombuffer(p, np.uint8) for p in g.planes]).astype(np.float32)
            if previous is not None and float(np.minimum(np.abs(cur - previous), 64).mean()) >= 8.0:
                cuts.append(int(np.searchsorted(pts, f.pts)))
            previous = cur
    return cuts


def one_pass(path: str) -> list[int]:
    """What shots mode runs (`indexer.shotpass`): the cuts and the sampled frames (8 per window of at most 10 s)
    from one forward decode of exact frames; its cost reads against the sampling decode below."""
    from indexer.probe import Limits
    from indexer.segments import Segmentation
    from indexer.shotpass import ShotPass
    from xclip_search.pixels import PixelConfig

    pixels = PixelConfig.from_preprocessor_dict({"size": 224}, image_size=224)
    one = ShotPass(
        path,
        num_frames=8,
        pixels=pixels,
        settings=Segmentation(),
        limits=Limits(),
        thumbnails=True,
        on_frame=lambda: None,
    )
    for _ in one.segments():
        pass
    assert one.result is not None
    return [c.frame for c in one.result.cuts]


def sampling_decode(path: str) -> list[int]:
    """What indexing decodes anyway (fixed 10 s windows, 8 frames each): the yardstick for the detectors' cost."""
    from indexer.extract import Extraction, ExtractSpec
    from xclip_search.pixels import PixelConfig

    spec = ExtractSpec(num_frames=8, pixels=PixelConfig.from_preprocessor_dict({"size": 224}, image_size=224))
    for _ in Extraction(path, spec).segments():
        pass
    return []


def score(found: list[int], truth: list[int], slack: int) -> tuple[int, int, int]:
    """(true positives, found, true) with each true cut matched at most once within `slack` frames."""
    left = list(truth)
    tp = 0
    for f in found:
        match = next((t for t in left if abs(t - f) <= slack), None)
        if match is not None:
            left.remove(match)
            tp += 1
    return tp, len(found), len(truth)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=12, help="generated multi-scene videos")
    ap.add_argument("--repeat", type=int, default=3, help="timing repeats (best of)")
    args = ap.parse_args()
    if os.environ.get("SCENEDETECT_PATH"):
        sys.path.insert(0, os.environ["SCENEDETECT_PATH"])
    methods: dict[str, tuple[Callable[[str], list[int]], int]] = {
        "grid": (grid, 1),
        "grid-nonref": (grid_nonref, 2),
        "grid-swscale": (grid_swscale, 1),
        "pyscenedetect": (pyscenedetect, 1),
        "keyframes": (keyframes, 1),
        "one pass: cuts + sampled frames": (one_pass, 1),
        "sampling decode (yardstick)": (sampling_decode, 0),
    }
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        sets = {
            "generated": synthetic(d, args.videos),
            "real (bikes+bunny+bikes)": [real_concatenation(d)],
            "one shot (bigbuckbunny)": [(ROOT / "tests" / "data" / "bigbuckbunny.mp4", [])],
        }
        print(f"{os.cpu_count()} CPU(s); CPU times, the best of {args.repeat}, one decoder thread\n")
        header = (
            f"{'method':28s} {'set':26s} {'CPU ms/video':>12s} {'recall':>7s} {'precision':>9s} {'found/true':>10s}"
        )
        print(header)
        print("-" * len(header))
        for name, (fn, slack) in methods.items():
            for set_name, videos in sets.items():
                best = float("inf")
                totals = np.zeros(3, int)
                try:
                    for r in range(args.repeat):
                        started = time.process_time()  # CPU time: a shared, loaded machine skews wall time
                        results = [fn(str(p)) for p, _ in videos]
                        best = min(best, time.process_time() - started)
                        if r == 0:
                            for (_, truth), found in zip(videos, results, strict=True):
                                totals += score(found, truth, slack)
                except ImportError as exc:
                    print(f"{name:28s} {set_name:26s} unavailable: {exc}")
                    break
                ms = best / len(videos) * 1000
                tp, nf, nt = (int(x) for x in totals)
                if name.startswith("sampling"):
                    print(f"{name:28s} {set_name:26s} {ms:12.1f}")
                    continue
                recall = f"{tp / nt:.3f}" if nt else "-"
                precision = f"{tp / nf:.3f}" if nf else ("1.000" if not nt else "-")
                print(f"{name:28s} {set_name:26s} {ms:12.1f} {recall:>7s} {precision:>9s} {nf:>4d}/{nt:<5d}")


if __name__ == "__main__":
    main()
