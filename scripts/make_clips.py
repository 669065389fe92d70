#!/usr/bin/env python
"""Write generated, captioned clips (H.264 mp4) and their captions, or one longer multi-scene video.

    python scripts/make_clips.py OUT --count 50 --seed 7   # OUT/clip0000.mp4 ... + captions.json/.csv
    python scripts/make_clips.py OUT --scenes 6 --seed 7   # OUT/scenes.mp4 + scenes.json

The clips are the ones the demonstration model is trained and evaluated on (``xclip_search.demo.clips``);
the same seed always gives the same files.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xclip_search.demo.clips import make_clip, make_scene_video, random_spec, write_captions, write_mp4


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output directory (created)")
    parser.add_argument("--count", type=int, default=20, help="number of clips")
    parser.add_argument("--scenes", type=int, default=0, help="write one video of this many scenes instead")
    parser.add_argument("--frames-per-scene", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64, help="frame width and height (even)")
    parser.add_argument("--fps", type=float, default=12.0)
    parser.add_argument("--two-shape-prob", type=float, default=0.25)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.scenes:
        video = make_scene_video(
            rng,
            args.scenes,
            fps=args.fps,
            frames_per_scene=args.frames_per_scene,
            size=args.size,
            two_shape_prob=args.two_shape_prob,
        )
        write_mp4(args.out / "scenes.mp4", video.frames, args.fps)
        meta = {
            "file": "scenes.mp4",
            "fps": args.fps,
            "duration": video.duration,
            "scenes": video.scenes_json(),
        }
        (args.out / "scenes.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.out / 'scenes.mp4'} ({len(video.scenes)} scenes, {video.duration:.1f} s)")
        return 0

    rows = []
    for i in range(args.count):
        clip = make_clip(rng, random_spec(rng, size=args.size, two_shape_prob=args.two_shape_prob))
        name = f"clip{i:04d}.mp4"
        write_mp4(args.out / name, clip.frames, args.fps)
        rows.append({"file": name, "caption": clip.caption, "frames": len(clip.frames), "spec": clip.spec.to_dict()})
    write_captions(args.out / "captions.json", rows)
    with (args.out / "captions.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "caption", "frames"])
        writer.writerows([r["file"], r["caption"], r["frames"]] for r in rows)
    print(f"wrote {len(rows)} clips and captions to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
