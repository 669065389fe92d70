#!/usr/bin/env python
"""Choosing how search fuses X-CLIP's moments with full-text matches of subtitles: measured, not guessed.

    python scripts/bench_fusion.py --workdir /tmp/xf-bench

A generated library (the demo's clip generator, scored by the bundled demo model, which really sees colours,
shapes and motions): scene videos of 2-second scenes, each with sidecar subtitles. Every scene gets a narrator's
line no frame shows (a distinctive sentence and a made-up name); half also get a line naming what is on screen
("look at the red circle"), and a quarter the very same words about a colour and shape that is *not* on screen.
Three kinds of query, each with its true moment:

- **said**: two words of one narrator line; the moment is that scene (X-CLIP has nothing to go on);
- **shown**: a scene's full caption ("red circle moving left"); no subtitle line holds all its words, so the
  text side finds nothing and fusion must leave X-CLIP's ranking as it is;
- **shown+said**: a colour and a shape ("red circle") that several lines say, some over scenes that show it and
  some over scenes that do not; the true moments are those that show it *and* say it.

For each method the script prints MRR and recall@1 per kind (one hit per video, top 10): X-CLIP alone, text
alone, reciprocal rank fusion with k = 60 and k = 10, and a calibrated mix (min-max normalised scores, weight w
on X-CLIP's) for w in 0.3, 0.5, 0.7. A hit is right when it is in the true video and its span overlaps the
true scene.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

NARRATION = [
    "the lighthouse keeper waves from the harbor",
    "grandma bakes bread every sunday",
    "the train to vienna leaves at noon",
    "remember to water the tomatoes",
    "our quarterly budget was approved",
    "a violin concert starts at eight",
    "the museum is closed on mondays",
    "pack an umbrella for the mountains",
    "the bakery sells warm croissants",
    "our flight lands in lisbon tomorrow",
    "happy birthday to the twins",
    "the plumber arrives after lunch",
    "feed the goldfish twice a day",
    "the library returns are overdue",
    "snow is expected over the weekend",
    "the marathon route passes the cathedral",
    "bring the blue folder to the meeting",
    "the orchestra rehearses on thursday",
    "our neighbours adopted a puppy",
    "the ferry schedule changed in april",
]


def _name(n: int) -> str:
    """A made-up name, different for every n (so a said query names one line only)."""
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "ve", "zu"]
    return "".join(syllables[int(d)] for d in str(n + 100))


def build(work: Path, videos: int, scenes: int, seed: int) -> tuple[Path, list[dict[str, Any]]]:
    """Write the scene videos and their subtitles; returns the library and its scenes' truth."""
    import pysubs2

    from xclip_search.demo import clips as gen

    lib = work / "library"
    lib.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth: list[dict[str, Any]] = []
    line = 0
    for i in range(videos):
        video = gen.make_scene_video(rng, scenes, fps=12.0, frames_per_scene=24, two_shape_prob=0.0)
        name = f"scenes-{i + 1:02d}.mp4"
        gen.write_mp4(lib / name, video.frames, fps=12.0)
        subs = pysubs2.SSAFile()
        for s in video.scenes:
            shape = s.spec.shapes[0]
            said = f"{NARRATION[line % len(NARRATION)]} says {_name(line)}"
            line += 1
            extra = ""
            roll = rng.random()
            if roll < 0.5:
                extra = f"look at the {shape.colour} {shape.shape}"
            elif roll < 0.75:  # the same words about a colour and shape that is not on screen
                colour = rng.choice([c for c in gen.COLOURS if c != shape.colour])
                extra = f"look at the {colour} {shape.shape}"
            mid = (s.start + s.end) / 2
            subs.append(pysubs2.SSAEvent(start=round(s.start * 1000) + 100, end=round(mid * 1000), text=said))
            if extra:
                subs.append(pysubs2.SSAEvent(start=round(mid * 1000), end=round(s.end * 1000) - 100, text=extra))
            truth.append(
                {
                    "video": name,
                    "start": s.start,
                    "end": s.end,
                    "caption": s.caption,
                    "colour_shape": f"{shape.colour} {shape.shape}",
                    "said": said,
                    "extra": extra,
                    "extra_true": bool(extra) and extra.endswith(f"{shape.colour} {shape.shape}"),
                }
            )
        subs.save(str((lib / name).with_suffix(".srt")), format_="srt")
    return lib, truth


def queries(truth: list[dict[str, Any]]) -> dict[str, list[tuple[str, list[tuple[str, float, float]]]]]:
    """(query, true moments) per kind (see the module docstring)."""
    said = []
    for t in truth:
        words = t["said"].split()  # the line's own name (last word) and a word of its sentence: one scene says both
        said.append((f"{words[1]} {words[-1]}", [(t["video"], t["start"], t["end"])]))
    shown: dict[str, list[tuple[str, float, float]]] = {}
    for t in truth:
        shown.setdefault(t["caption"], []).append((t["video"], t["start"], t["end"]))
    both: dict[str, list[tuple[str, float, float]]] = {}
    for t in truth:
        if t["extra_true"]:
            both.setdefault(t["colour_shape"], []).append((t["video"], t["start"], t["end"]))
    # Only the colour-shape pairs that some line also names where it is not shown: the same words, so the text
    # side alone cannot tell them apart.
    misleading = {" ".join(t["extra"].split()[3:5]) for t in truth if t["extra"] and not t["extra_true"]}
    return {
        "said": said,
        "shown": sorted(shown.items()),
        "shown+said": sorted((q, m) for q, m in both.items() if q in misleading),
    }


def evaluate(index_dir: Path, kinds: dict[str, Any], top_k: int) -> dict[str, dict[str, dict[str, float]]]:
    from xclip_search import Index
    from xclip_search.fusion import FusionMethod, fuse, spoken_moments
    from xclip_search.store.fulltext import parse_query

    methods: dict[str, FusionMethod | None] = {
        "x-clip only": None,
        "text only": None,
        "rrf k=60": FusionMethod("rrf", 60.0),
        "rrf k=10": FusionMethod("rrf", 10.0),
        "rrf k=60 text x2": FusionMethod("rrf", 60.0, text_weight=2.0),
        "mix w=0.3": FusionMethod("mix", visual_weight=0.3),
        "mix w=0.5": FusionMethod("mix", visual_weight=0.5),
        "mix w=0.7": FusionMethod("mix", visual_weight=0.7),
    }
    out: dict[str, dict[str, dict[str, float]]] = {m: {} for m in methods}
    with Index.open(index_dir) as index:
        engine = index.engine
        catalog = index.catalog
        for kind, items in kinds.items():
            ranks: dict[str, list[float]] = {m: [] for m in methods}
            for query, moments in items:
                visual = index.search(query, match="visual", top_k=top_k)
                words = parse_query(query)
                matches = catalog.search_cues(words, limit=max(50, 5 * top_k)) if words else []
                layout = engine._layout_of(sorted({m.stored.video_id for m in matches}))
                spoken = spoken_moments(matches, layout, None, per_video=True)
                for name, method in methods.items():
                    if name == "x-clip only":
                        spans = [(h.path, h.start, h.end) for h in visual]
                    elif name == "text only":
                        paths = {v.id: v.path for v in catalog.videos_by_id([s.video_id for s in spoken])}
                        spans = [(paths[s.video_id], s.start, s.end) for s in spoken]
                    else:
                        assert method is not None
                        fused = fuse(list(visual), spoken, per_video=True, method=method)[:top_k]
                        spans = []
                        for f in fused:
                            if f.visual is not None:
                                start, end, path = f.visual.start, f.visual.end, f.visual.path
                                if f.spoken is not None:
                                    start, end = min(start, f.spoken.start), max(end, f.spoken.end)
                            else:
                                assert f.spoken is not None
                                path = next(iter(catalog.videos_by_id([f.spoken.video_id]))).path
                                start, end = f.spoken.start, f.spoken.end
                            spans.append((path, start, end))
                    rank = next(
                        (
                            i + 1
                            for i, (path, start, end) in enumerate(spans[:top_k])
                            if any(Path(path).name == v and start < e and s < end for v, s, e in moments)
                        ),
                        None,
                    )
                    ranks[name].append(0.0 if rank is None else 1.0 / rank)
            for name in methods:
                rr = ranks[name]
                out[name][kind] = {
                    "mrr": float(np.mean(rr)),
                    "r@1": float(np.mean([r == 1.0 for r in rr])),
                    "queries": len(rr),
                }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from indexer import IndexOptions, run_index

    work = Path(args.workdir or tempfile.mkdtemp(prefix="xf-bench-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    lib, truth = build(work, args.videos, args.scenes, args.seed)
    report = run_index([str(lib)], work / "index", model="demo", options=IndexOptions(segment_seconds=3.0))
    print(f"indexed {report.to_dict()['indexed']} videos, {report.segments} segments, {report.sidecars.cues} cues")
    kinds = queries(truth)
    results = evaluate(work / "index", kinds, args.top_k)
    names = list(kinds)
    print(f"\n{'method':<17} " + "  ".join(f"{k + ' MRR / R@1':>22}" for k in names))
    for method, per_kind in results.items():
        cells = [f"{per_kind[k]['mrr']:.3f} / {per_kind[k]['r@1']:.3f}" for k in names]
        print(f"{method:<17} " + "  ".join(f"{c:>22}" for c in cells))
    print("queries: " + ", ".join(f"{k} {len(v)}" for k, v in kinds.items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
