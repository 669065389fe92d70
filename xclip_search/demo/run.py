"""``xclip-search demo``: the whole product on generated clips, offline, with answers that can be checked.

A seeded library of short captioned clips and a few longer videos made of scenes (so that search returns time
ranges) is written to disk, indexed with the bundled demonstration model through the ordinary indexer, searched
through the ordinary `Index` API, and new clips the index never saw are tagged with an open vocabulary. Every
clip's caption is known, so each result is printed next to the truth: the demo shows what the model gets wrong
as plainly as what it gets right.

The library is a pure function of the seed; a second run reuses the files and the index (nothing is re-encoded).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import clips as gen

SEED = 20261121
# Segments follow shots (the default): each 2 s scene of a scene video is a shot, so one segment, and windows
# of at most 3 s keep single clips (16-32 frames at 12 fps, up to 2.7 s) one segment too.
SEGMENT_SECONDS = 3.0
FPS = 12.0
SCENE_FRAMES = 24
LABELS = gen.MOTIONS  # zero-shot tagging vocabulary: the seven motions
TRUTH_FILE = "captions.json"
GROUND_TRUTH_FILE = "ground-truth.jsonl"  # what `xclip-search eval` reads (xclip_search.evaluate)


@dataclass(frozen=True)
class Truth:
    """What is really in one time range of one library file: what it shows (`caption`) and what its subtitles
    say there without it being shown (`said`; scene videos only)."""

    start: float
    end: float
    caption: str
    said: str = ""


# What a narrator says over each scene of the scene videos (its sidecar subtitles): things no frame shows, so a
# search finds them only through the subtitles. One line per scene, in order; one is Cyrillic.
NARRATION = (
    "The lighthouse keeper waves from the harbor.",
    "Grandma bakes bread every Sunday.",
    "The train to Vienna leaves at noon.",
    "Remember to water the tomatoes.",
    "Our quarterly budget was approved this morning.",
    "A violin concert starts at eight.",
    "Спокойной ночи, малыш.",
    "The museum is closed on Mondays.",
    "Pack an umbrella for the mountains.",
    "The bakery sells warm croissants.",
    "Our flight lands in Lisbon tomorrow.",
    "Happy birthday to the twins!",
)
SAID_QUERY = "quarterly budget"  # said over a scene of scenes-2.mp4, shown nowhere


@dataclass
class DemoOptions:
    out_dir: Path
    model: str = "demo"
    seed: int = SEED
    clips: int = 18
    scene_videos: int = 3
    scenes: int = 4
    new_clips: int = 7
    top_k: int = 3
    device: str | None = None


@dataclass
class DemoReport:
    """What the demo did; `to_dict` is the ``demo --json`` shape."""

    library: Path
    index: Path
    model: str
    indexed: dict[str, Any]
    searches: list[dict[str, Any]] = field(default_factory=list)
    tagging: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "library": str(self.library),
            "index": str(self.index),
            "model": self.model,
            "indexed": self.indexed,
            "searches": self.searches,
            "tagging": self.tagging,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }


# -- the library ---------------------------------------------------------------------------------------------


def build_library(directory: Path, opts: DemoOptions) -> dict[str, list[Truth]]:
    """Write the clips and scene videos (once; they are a function of the seed) and return the ground truth."""
    directory.mkdir(parents=True, exist_ok=True)
    truth_path = directory / TRUTH_FILE
    if truth_path.is_file():
        recorded = json.loads(truth_path.read_text())
        if recorded.get("seed") == opts.seed and all((directory / name).is_file() for name in recorded["files"]):
            known = {name: [Truth(**t) for t in rows] for name, rows in recorded["files"].items()}
            scenes = {name: rows for name, rows in known.items() if name.startswith("scenes-")}
            if all(any(t.said for t in rows) for rows in scenes.values()):  # else: written before subtitles
                for name, rows in scenes.items():
                    if not (directory / name).with_suffix(".srt").is_file():
                        write_subtitles(directory / name, rows)
                return known
    rng = np.random.default_rng(opts.seed)
    truth: dict[str, list[Truth]] = {}
    for i in range(opts.clips):
        clip = gen.make_clip(rng)
        name = f"clip-{i + 1:02d}.mp4"
        gen.write_mp4(directory / name, clip.frames, fps=FPS)
        truth[name] = [Truth(0.0, len(clip.frames) / FPS, clip.caption)]
    for i in range(opts.scene_videos):
        video = gen.make_scene_video(rng, opts.scenes, fps=FPS, frames_per_scene=SCENE_FRAMES, two_shape_prob=0.0)
        name = f"scenes-{i + 1}.mp4"
        gen.write_mp4(directory / name, video.frames, fps=FPS)
        truth[name] = [
            Truth(s.start, s.end, s.caption, said_line(i, j, opts.scenes)) for j, s in enumerate(video.scenes)
        ]
        write_subtitles(directory / name, truth[name])
    recorded_rows = {name: [t.__dict__ for t in ts] for name, ts in truth.items()}
    truth_path.write_text(json.dumps({"seed": opts.seed, "fps": FPS, "files": recorded_rows}, indent=1) + "\n")
    return truth


def said_line(video: int, scene: int, scenes_per_video: int) -> str:
    """The narrator's line over one scene (`NARRATION`, in order over the scene videos)."""
    return NARRATION[(video * scenes_per_video + scene) % len(NARRATION)]


def write_subtitles(video: Path, truth: list[Truth]) -> Path:
    """The scene video's sidecar subtitles (``scenes-N.srt``): per scene, a line naming the shape on screen
    ("Here comes a circle.") and the narrator's line (`Truth.said`), which no frame shows."""
    import pysubs2

    subs = pysubs2.SSAFile()
    for t in truth:
        shape = next((w for w in gen.SHAPES if w in t.caption), "shape")
        middle = (t.start + t.end) / 2
        subs.append(
            pysubs2.SSAEvent(start=round(t.start * 1000) + 100, end=round(middle * 1000), text=f"Here comes a {shape}.")
        )
        if t.said:
            subs.append(pysubs2.SSAEvent(start=round(middle * 1000), end=round(t.end * 1000) - 100, text=t.said))
    path = video.with_suffix(".srt")
    subs.save(str(path), format_="srt", encoding="utf-8")
    return path


def write_ground_truth(directory: Path, truth: dict[str, list[Truth]]) -> Path:
    """The library's captions as an `xclip-search eval` ground truth (JSON Lines, paths relative to it).

    Two kinds of query: each distinct caption over the whole library (relevant: every file and span showing it),
    and each scene's caption within its scene video (relevant: that scene's span), which measures how well a
    hit's time range matches the scene.
    """
    by_caption: dict[str, list[dict[str, Any]]] = {}
    for name, rows in truth.items():
        for t in rows:
            by_caption.setdefault(t.caption, []).append({"path": name, "start": t.start, "end": t.end})
    lines = [{"query": caption, "relevant": relevant} for caption, relevant in by_caption.items()]
    for name, rows in truth.items():
        if len(rows) > 1:
            for t in rows:
                span = {"path": name, "start": t.start, "end": t.end}
                lines.append({"query": t.caption, "relevant": [span], "within": name})
    path = directory / GROUND_TRUTH_FILE
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def new_clips(directory: Path, opts: DemoOptions) -> dict[str, str]:
    """Clips the index never saw (another seed), one shape each, for tagging: file name -> caption."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(opts.seed + 1)
    out: dict[str, str] = {}
    for i in range(opts.new_clips):
        spec = gen.random_spec(rng, two_shape_prob=0.0, motion=LABELS[i % len(LABELS)])
        clip = gen.make_clip(rng, spec)
        name = f"new-{i + 1}.mp4"
        if not (directory / name).is_file():
            gen.write_mp4(directory / name, clip.frames, fps=FPS)
        out[name] = clip.caption
    return out


def pick_queries(truth: dict[str, list[Truth]]) -> list[tuple[str, str]]:
    """(query, how a result is judged): scenes inside longer videos, a whole clip, and one motion word alone."""
    scene_files = [name for name in truth if name.startswith("scenes-")]
    clip_files = [name for name in truth if name.startswith("clip-")]
    queries: list[tuple[str, str]] = []
    for k, name in enumerate(scene_files[:2]):
        scenes = truth[name]
        queries.append((scenes[(k + 2) % len(scenes)].caption, "exact"))
    single = [n for n in clip_files if " and " not in truth[n][0].caption]
    if single:
        queries.append((truth[single[0]][0].caption, "exact"))
    if any(SAID_QUERY in t.said.lower() for rows in truth.values() for t in rows):
        queries.append((SAID_QUERY, "said"))  # found only through what the subtitles say
    queries.append(("blinking", "contains"))
    return queries


def truth_at(truth: list[Truth], start: float, end: float) -> Truth:
    """The scene covering the middle of ``[start, end]``."""
    middle = (start + end) / 2
    for t in truth:
        if t.start <= middle < t.end:
            return t
    return truth[-1]


def caption_at(truth: list[Truth], start: float, end: float) -> str:
    """The caption of the scene covering the middle of ``[start, end]``."""
    return truth_at(truth, start, end).caption


def judge(query: str, how: str, caption: str, said: str = "") -> bool:
    """Whether a hit is right: its scene shows `query` (``exact``, or ``contains`` a word), or its subtitles say
    it there (``said``)."""
    if how == "exact":
        return caption == query
    if how == "said":
        return query.lower() in said.lower()
    return query in caption


# -- the run ---------------------------------------------------------------------------------------------------


def run_demo(opts: DemoOptions, *, progress: Any = None, say: Callable[[str], None] | None = None) -> DemoReport:
    """Generate, index, search and tag; see the module docstring."""
    from indexer import IndexOptions, run_index
    from indexer.embed import embed_files

    from ..checkpoint import resolve_checkpoint
    from ..index import Index
    from ..store.segmentation import Segmentation
    from ..tagging import tags_to_json

    note = say or (lambda _message: None)
    resolve_checkpoint(opts.model)  # a bad --model fails here, before anything is generated
    out = opts.out_dir.expanduser().resolve()
    library, index_dir = out / "library", out / "index"
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    note(f"Generating the demo library in {library} ...")
    truth = build_library(library, opts)
    write_ground_truth(library, truth)
    fresh = new_clips(out / "new-clips", opts)
    seconds["generate"] = time.perf_counter() - started

    started = time.perf_counter()
    note(f"Indexing it with the '{opts.model}' model into {index_dir} ...")
    report = run_index(
        [str(library)],
        index_dir,
        model=opts.model,
        options=IndexOptions(segment_seconds=SEGMENT_SECONDS, device=opts.device),
        progress=progress,
    )
    seconds["index"] = time.perf_counter() - started
    indexed = {k: v for k, v in report.to_dict().items() if k in ("indexed", "unchanged", "failed", "segments")}

    result = DemoReport(library=library, index=index_dir, model=opts.model, indexed=indexed)
    with Index.open(index_dir, device=opts.device) as index:
        started = time.perf_counter()
        for query, how in pick_queries(truth):
            hits = index.search(query, top_k=opts.top_k)
            rows = []
            for hit in hits:
                name = Path(hit.path).name
                scene = truth_at(truth[name], hit.best_start, hit.best_end)
                rows.append(
                    {**hit.to_dict(), "best_start": round(hit.best_start, 3), "best_end": round(hit.best_end, 3)}
                    | {"caption": scene.caption, "said": scene.said}
                    | {"correct": judge(query, how, scene.caption, scene.said)}
                )
            result.searches.append({"query": query, "judged_by": how, "results": rows})
        seconds["search"] = time.perf_counter() - started

        started = time.perf_counter()
        paths = [str(out / "new-clips" / name) for name in fresh]
        checkpoint = index.checkpoint
        for item in embed_files(paths, checkpoint, segmentation=Segmentation(segment_seconds=0)):
            if item.embeddings is None or item.extracted is None:
                continue
            tags = index.tag_embeddings(item.embeddings.v, item.embeddings.z, list(LABELS), top=3)
            spans = [(s.start_s, s.end_s) for s in item.extracted.segments]
            for row in tags_to_json(item.path, spans, tags):
                caption = fresh[Path(item.path).name]
                row["caption"] = caption
                row["correct"] = bool(row["labels"]) and row["labels"][0]["label"] in caption
                result.tagging.append(row)
        result.tagging.sort(key=lambda r: r["path"])
        seconds["tag"] = time.perf_counter() - started
    result.seconds = seconds
    return result
