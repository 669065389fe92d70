"""A library of multi-scene videos with hard cuts at random times, and its `xclip-search eval` ground truth.

Each video plays 3 to 6 generated scenes (one shape each, `clips.make_scene_video`) of random lengths that are
multiples of no window length, cut hard from one to the next. The ground truth asks for each scene's caption
within its own video, with the scene's span: `xclip-search eval` then reports how well the top hit's time range
matches the scene (mean temporal IoU), which is what shot-aligned segments are for. A scene whose caption
appears twice in its video is left out of the ground truth (its answer would be ambiguous).

Used by the shot-segmentation tests and by ``scripts/make_scene_library.py``; numpy, PIL and PyAV only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import clips as gen

GROUND_TRUTH_FILE = "ground-truth.jsonl"
FPS = 12.0


def write_scene_library(
    directory: str | Path,
    videos: int = 8,
    *,
    seed: int = 15,
    scene_frames: tuple[int, int] = (14, 70),
    scenes: tuple[int, int] = (3, 6),
) -> tuple[Path, list[list[int]]]:
    """Write the videos and ``ground-truth.jsonl`` into `directory`; returns the ground truth's path and each
    video's true cut frames (for detector tests)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines: list[dict[str, object]] = []
    cuts: list[list[int]] = []
    for i in range(videos):
        count = int(rng.integers(scenes[0], scenes[1] + 1))
        video = gen.make_scene_video(rng, count, fps=FPS, frames_per_scene=scene_frames, two_shape_prob=0.0)
        name = f"scenes-{i + 1:02d}.mp4"
        gen.write_mp4(out / name, video.frames, fps=FPS)
        cuts.append([s.start_frame for s in video.scenes[1:]])
        captions = [s.caption for s in video.scenes]
        for s in video.scenes:
            if captions.count(s.caption) == 1:
                span = {"path": name, "start": s.start, "end": s.end}
                lines.append({"query": s.caption, "relevant": [span], "within": name})
    truth = out / GROUND_TRUTH_FILE
    truth.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return truth, cuts
