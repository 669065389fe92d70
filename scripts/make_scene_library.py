"""Write a library of multi-scene videos (hard cuts at random times) and its ground truth, for `xclip-search eval`.

python scripts/make_scene_library.py /tmp/scenes --videos 8
xclip-search index /tmp/scenes --index /tmp/scenes-shots --model demo                    # shots (default)
xclip-search index /tmp/scenes --index /tmp/scenes-fixed --model demo --segments fixed   # 10 s windows
xclip-search eval /tmp/scenes/ground-truth.jsonl --index /tmp/scenes-shots
xclip-search eval /tmp/scenes/ground-truth.jsonl --index /tmp/scenes-fixed
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xclip_search.demo.scenelib import write_scene_library


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("directory", type=Path)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--seed", type=int, default=15)
    args = ap.parse_args()
    truth, cuts = write_scene_library(args.directory, args.videos, seed=args.seed)
    print(f"{args.videos} videos, {sum(len(c) for c in cuts)} cuts; ground truth: {truth}")


if __name__ == "__main__":
    main()
