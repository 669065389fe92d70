"""Indexing throughput, measured against its own baselines in one run (DESIGN.md §5, issue 3).

Builds (or reuses) a library of generated H.264 clips with ordinary GOPs, then measures with the same model:

1. the naive loop a user would write from the transformers docs: decord per file, `XCLIPProcessor`,
   `get_video_features` one video at a time (a script in a fresh interpreter, like the CLI below: both pay for
   importing torch and transformers and loading the model);
2. decode-only throughput of the indexer's supervised workers (events consumed and dropped);
3. model-only throughput on pre-decoded pixels (the best of the index's thread setting and all cores);
4. ``xclip-search index`` end to end (a fresh CLI process: model load and worker start-up included);
5. the same command again over the unchanged library, and the end-of-run compaction check it makes (timed alone:
   with no dead rows and few shards it decides to do nothing, so the figures above are unchanged by it);
6. shot-aligned segments (the default) against fixed windows (``--segments fixed``): decode-only and end to end,
   in the same run, so the cost of cut detection reads as a ratio (issue 15: at least 85%).

and prints videos/s side by side with the ratios the issues set as targets. Every measurement is repeated
(``--reps``, interleaved, so a change in the machine's load hits every variant alike) and printed as median
[min..max]; so are the CPU seconds per video (this process and its children), which a shared machine skews
less than wall time. Also printed: the command's fixed start-up cost (a library of one clip) and, first, the
CPU per video of each stage of a decode worker's work, in this process. Run it alone on the machine:

    flock /work/bench.lock python scripts/bench_index.py --clips 200 --seconds 10 --model tiny
    flock /work/bench.lock python scripts/bench_index.py --clips 40 --seconds 10 --model base

`--model base` is X-CLIP base/32 (8 frames, 224 px) with random weights: the same cost as the real one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# -- the library ------------------------------------------------------------------------------------------


def _write_clip(args: tuple[str, int, int, int, int, int]) -> str:
    """A clip with camera-like motion: a smooth random texture panning, plus a moving shape (H.264, GOP given).

    One shot: the texture is wide enough that the pan never wraps around (a wrap is a hard cut, which would make
    shot-aligned segmentation cut every clip in two).
    """
    import av

    path, seconds, width, height, gop, seed = args
    rng = np.random.default_rng(seed)
    fps = 25
    frames = seconds * fps
    small = rng.integers(0, 255, size=(height // 8 + 8, (width + 2 * frames) // 8 + 8, 3), dtype=np.uint8)
    texture = np.kron(small, np.ones((8, 8, 1), dtype=np.uint8))  # blocky texture, then blurred by the resize
    colour = rng.integers(0, 255, size=3, dtype=np.uint8)
    tmp = path + ".part.mp4"
    with av.open(tmp, mode="w") as container:
        stream: Any = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(gop), "keyint_min": str(gop), "preset": "veryfast", "crf": "23"}
        for i in range(frames):
            x0 = i * 2
            frame = np.ascontiguousarray(texture[:height, x0 : x0 + width])
            side = height // 4
            cx = int((width - side) * (0.5 + 0.45 * np.sin(i / 20 + seed)))
            cy = int((height - side) * (0.5 + 0.4 * np.cos(i / 15 + seed)))
            frame[cy : cy + side, cx : cx + side] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


def build_library(root: Path, clips: int, seconds: int, width: int, height: int, gop: int) -> Path:
    lib = root / f"lib1shot-{seconds}s-{width}x{height}-g{gop}" / str(clips)
    lib.mkdir(parents=True, exist_ok=True)
    # Clips already generated for a larger or smaller library are linked, not generated again.
    for other in lib.parent.glob("*/clip*.mp4"):
        mine = lib / other.name
        if other.parent != lib and int(other.stem[4:]) < clips and not mine.exists():
            os.link(other, mine)
    todo = [
        (str(lib / f"clip{i:04d}.mp4"), seconds, width, height, gop, i)
        for i in range(clips)
        if not (lib / f"clip{i:04d}.mp4").exists()
    ]
    if todo:
        print(f"generating {len(todo)} clips in {lib} ...", file=sys.stderr, flush=True)
        with ProcessPoolExecutor(max(1, os.cpu_count() or 1)) as ex:
            list(ex.map(_write_clip, todo))
    return lib


def build_model(root: Path, kind: str) -> Path:
    out = root / f"model-{kind}"
    if (out / "model.safetensors").exists():
        return out
    if kind == "tiny":
        from xclip_search.testing import make_tiny_checkpoint

        return make_tiny_checkpoint(out)
    # X-CLIP base/32 (the default XCLIPConfig: 8 frames, 224 px, patch 32) with random weights.
    import torch
    from transformers import CLIPTokenizer, XCLIPConfig, XCLIPModel

    from xclip_search.testing import TOKENIZER_DIR, preprocessor_config

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    XCLIPModel(XCLIPConfig()).eval().save_pretrained(out, safe_serialization=True)
    CLIPTokenizer(str(TOKENIZER_DIR / "vocab.json"), str(TOKENIZER_DIR / "merges.txt")).save_pretrained(out)
    pre = preprocessor_config(224)
    (out / "preprocessor_config.json").write_text(json.dumps(pre))
    return out


# -- measurements -----------------------------------------------------------------------------------------


def naive_script(files: list[Path], model_dir: Path) -> None:
    """`naive_loop` as a user runs it: a script in a fresh interpreter, which imports torch and transformers
    and loads the model, as ``xclip-search index`` (a fresh process) does."""
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); from bench_index import naive_loop; "
        "naive_loop([Path(p) for p in sys.argv[3:]], Path(sys.argv[2]))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [str(ROOT / "scripts"), str(model_dir), *map(str, files)]
    subprocess.run([sys.executable, "-c", code, *args], check=True, env=env, capture_output=True)


def naive_loop(files: list[Path], model_dir: Path) -> None:
    """The loop from the transformers docs: decord, XCLIPProcessor, get_video_features one video at a time."""
    import decord
    import torch
    from transformers import AutoTokenizer, XCLIPModel, XCLIPProcessor
    from transformers.models.videomae.image_processing_pil_videomae import VideoMAEImageProcessorPil

    from xclip_search.sampling import sample_frame_indices

    model = XCLIPModel.from_pretrained(model_dir).eval()
    processor = XCLIPProcessor(
        image_processor=VideoMAEImageProcessorPil.from_pretrained(model_dir),
        tokenizer=AutoTokenizer.from_pretrained(model_dir),
    )
    frames_per_clip = model.config.vision_config.num_frames
    with torch.inference_mode():
        for path in files:
            vr = decord.VideoReader(str(path))
            frames = vr.get_batch(sample_frame_indices(0, len(vr), frames_per_clip)).asnumpy()
            inputs = processor(videos=list(frames), return_tensors="pt")
            model.get_video_features(**inputs)


def decode_only(
    files: list[Path], model_dir: Path, workers: int, segment_seconds: float, segments_mode: str = "shots"
) -> tuple[int, float]:
    """The indexer's warm workers alone (segments consumed and dropped): the segment count and wall time."""
    from indexer.extract import ExtractSpec
    from indexer.modelspec import read_model_shape
    from indexer.pool import DecodePool, SegmentReady

    shape = read_model_shape(str(model_dir))
    spec = ExtractSpec(
        num_frames=shape.num_frames, pixels=shape.pixels, segment_seconds=segment_seconds, segments=segments_mode
    )
    segments = 0
    with DecodePool(spec, workers) as pool:
        pool.warm_up()
        with Clock() as clock:
            for event in pool.run([str(f) for f in files]):
                segments += isinstance(event, SegmentReady)
    return segments, clock.wall


def model_inputs(model_dir: Path, sample: list[Path], segments: int) -> tuple[Any, np.ndarray]:
    """An encoder and `segments` segments of pre-decoded pixels (from `sample`, repeated)."""
    from indexer.extract import ExtractSpec, extract
    from xclip_search.checkpoint import load_checkpoint
    from xclip_search.encoder import XClipEncoder

    ckpt = load_checkpoint(str(model_dir), device="cpu")
    spec = ExtractSpec(num_frames=ckpt.num_frames, pixels=ckpt.pixels)
    pixels = np.concatenate([extract(str(p), spec).pixels for p in sample])
    reps = max(1, -(-segments // len(pixels)))
    return XClipEncoder(ckpt), np.concatenate([pixels] * reps)[:segments]


def model_only(encoder: Any, pixels: np.ndarray, batch: int) -> None:
    """The encoder alone on pre-decoded pixels, in batches as the index runs it."""
    for i in range(0, len(pixels), batch):
        encoder.encode_videos(pixels[i : i + batch])


def index_cli(lib: Path, index: Path, model_dir: Path, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "xclip_search", "index", str(lib), "--index", str(index), "--model", str(model_dir)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([*cmd, *extra, "--json"], capture_output=True, text=True, env=env, check=False)
    if done.returncode not in (0, 3):
        raise SystemExit(f"index failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def compaction_check(index: Path) -> tuple[float, str]:
    """The end-of-run compaction check of an ``index`` run on `index`, timed on its own (best of 5): what a run
    with nothing to compact pays for it. Returns (seconds, what it decided)."""
    from indexer.pipeline import IndexOptions
    from xclip_search.store.compaction import maybe_compact
    from xclip_search.store.integrity import recorded_model
    from xclip_search.store.writer import IndexWriter

    best, decision = float("inf"), ""
    for _ in range(5):
        with IndexWriter(index, recorded_model(index)) as writer:
            started = time.perf_counter()
            report = maybe_compact(writer, IndexOptions().compaction_policy())
            best = min(best, time.perf_counter() - started)
        if report is not None and report.compacted:
            raise SystemExit(f"the benchmark index needed a compaction ({report.reason}); the check is not a no-op")
        decision = "no shards" if report is None else report.reason
    return best, decision


def stage_costs(files: list[Path], model_dir: Path, mode: str) -> tuple[dict[str, float], float]:
    """CPU seconds per video of each stage of a decode worker's work (in this process), and the total."""
    import importlib

    import indexer.extract as ex
    import indexer.shots as sh
    from indexer.extract import ExtractSpec, decode_file
    from indexer.modelspec import read_model_shape

    shape = read_model_shape(str(model_dir))
    spec = ExtractSpec(num_frames=shape.num_frames, pixels=shape.pixels, segments=mode)
    costs: dict[str, float] = {}
    patched: list[tuple[Any, str, Any]] = []

    def timed(module: Any, name: str, label: str) -> None:
        original = getattr(module, name, None)
        if original is None:  # an older checkout (before/after comparisons): that stage is not there
            return

        def wrapper(*a: Any, **k: Any) -> Any:
            started = time.process_time()
            try:
                return original(*a, **k)
            finally:
                costs[label] = costs.get(label, 0.0) + time.process_time() - started

        patched.append((module, name, original))
        setattr(module, name, wrapper)

    try:
        sp: Any = importlib.import_module("indexer.shotpass")
    except ImportError:
        sp = None
    for module, name, label in [
        (ex, "content_hash", "hash"),
        (ex, "probe", "probe"),
        (ex, "detect_cuts", "cut detection pass"),
        (sh, "_grid", "cut scores (grid)"),
        (sp, "cut_at", "cut decisions"),
        (ex, "resize_and_crop", "resize + crop"),
        (sp, "resize_and_crop", "resize + crop"),
        (ex, "thumbnail_or_none", "thumbnail"),
        (ex, "_thumbnail", "thumbnail"),
        (sp, "thumbnail_or_none", "thumbnail"),
    ]:
        timed(module, name, label)
    try:
        list(decode_file(str(files[0]), spec))  # warm caches and lazy imports
        costs.clear()
        started = time.process_time()
        for f in files:
            list(decode_file(str(f), spec))
        total = time.process_time() - started
    finally:
        for module, name, original in reversed(patched):
            setattr(module, name, original)
    return {k: v / len(files) for k, v in costs.items()}, total / len(files)


def spread(values: list[float], fmt: str) -> str:
    """Median and range of repeated measurements."""
    v = sorted(values)
    return f"{format(v[len(v) // 2], fmt)} [{format(v[0], fmt)}..{format(v[-1], fmt)}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--gop", type=int, default=50, help="keyframe interval in frames (25 fps)")
    ap.add_argument("--model", choices=["tiny", "base"], default="tiny")
    ap.add_argument("--naive-clips", type=int, default=None, help="clips timed in the naive loop [default: all]")
    ap.add_argument(
        "--reps", type=int, default=3, help="repetitions of every measurement, interleaved (0: the stages only)"
    )
    ap.add_argument("--stages", type=int, default=12, help="clips timed stage by stage in this process (0: none)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "xclip-bench", help="library cache")
    ap.add_argument("index_args", nargs="*", help="extra arguments for 'xclip-search index' (after --)")
    args = ap.parse_args()

    from indexer.modelspec import read_model_shape
    from indexer.tuning import available_cores, resolve_resources

    lib = build_library(args.cache, args.clips, args.seconds, args.width, args.height, args.gop)
    model_dir = build_model(args.cache, args.model)
    files = sorted(lib.glob("*.mp4"))[: args.clips]
    res = resolve_resources(read_model_shape(str(model_dir)), on_gpu=False, workers=None, batch_size=None, threads=None)
    cores = available_cores()
    print(f"{len(files)} clips of {args.seconds} s at {args.width}x{args.height}, GOP {args.gop}; model {args.model}")
    print(
        f"machine: {cores} cores, load average {os.getloadavg()[0]:.2f} at start; index uses {res.workers} "
        f"worker(s), {res.threads} model thread(s), batch {res.batch_size}; {args.reps} interleaved repetitions"
    )

    if args.stages:
        print(f"\nCPU ms per video of a decode worker's stages ({min(args.stages, len(files))} clips, this process):")
        for mode in ("fixed", "shots"):
            costs, total = stage_costs(files[: args.stages], model_dir, mode)
            other = total - sum(costs.values())
            parts = "  ".join(f"{k} {v * 1000:.1f}" for k, v in sorted(costs.items()))
            print(f"  {mode:<6} total {total * 1000:6.1f}: {parts}  decoding and the rest {other * 1000:.1f}")
        print()
    if not args.reps:
        return

    naive_files = files[: args.naive_clips or len(files)]
    rates: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}

    def report(what: str, videos: int, clock: Clock) -> float:
        rate = videos / clock.wall
        rates.setdefault(what, []).append(rate)
        cpus.setdefault(what, []).append(clock.cpu / videos)
        print(f"  {what:<40} {rate:9.2f} videos/s  {clock.cpu / videos:7.3f} CPU s/video", flush=True)
        return rate

    import torch

    encoder = pixels = None
    per_video = 1.0
    again_s: list[float] = []
    with tempfile.TemporaryDirectory(prefix="xclip-bench-index-") as tmp:
        for rep in range(args.reps):
            print(f"repetition {rep + 1} (load average {os.getloadavg()[0]:.2f})")
            with Clock() as clock:
                naive_script(naive_files, model_dir)
            report("naive loop", len(naive_files), clock)
            for mode in ("shots", "fixed"):
                with Clock() as clock:
                    segments, warm_wall = decode_only(files, model_dir, res.workers, 10.0, mode)
                clock.wall = warm_wall  # the limit: warm workers (their start-up CPU is still in the CPU figure)
                report(f"decode only ({mode})", len(files), clock)
                if mode == "shots":
                    per_video = segments / len(files)
            if encoder is None:
                encoder, pixels = model_inputs(model_dir, files[:4], max(4 * res.batch_size, 32))
            best = 0.0
            for threads in sorted({res.threads or cores, cores}):
                torch.set_num_threads(threads)
                model_only(encoder, pixels[: res.batch_size], res.batch_size)  # warm-up
                with Clock() as clock:
                    model_only(encoder, pixels, res.batch_size)
                best = max(best, len(pixels) / clock.wall)
            # The model limit in videos/s: segments/s of the best thread setting over the segments per video.
            rates.setdefault("model only", []).append(best / per_video)
            print(f"  {'model only (best thread setting)':<40} {best / per_video:9.2f} videos/s", flush=True)
            for mode in ("shots", "fixed"):
                index = Path(tmp) / f"{mode}-{rep}"
                extra = [*args.index_args, "--segments", mode]
                with Clock() as clock:
                    index_cli(lib, index, model_dir, extra)
                report(f"index end to end ({mode})", len(files), clock)
                if mode == "shots":
                    with Clock() as clock:
                        index_cli(lib, index, model_dir, extra)
                    again_s.append(clock.wall)
            # The CLI's fixed cost (interpreter, torch, the model, workers) from a library of one clip.
            one = Path(tmp) / f"one-{rep}"
            one.mkdir()
            os.link(files[0], one / files[0].name)
            with Clock() as clock:
                index_cli(one, Path(tmp) / f"one-index-{rep}", model_dir, args.index_args)
            cpus.setdefault("start-up", []).append(clock.cpu)
            rates.setdefault("start-up wall", []).append(clock.wall)
        check_s, decision = compaction_check(Path(tmp) / f"shots-{args.reps - 1}")
        print(
            f"  {'compaction check of a run':<40} {check_s * 1000:9.1f} ms  ({decision}; "
            f"{check_s / statistics.median(again_s):.2%} of the unchanged re-run)"
        )

    def ratio(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(rates[a], rates[b], strict=True)]

    print("\nmedian [min..max] over the repetitions")
    for what, values in rates.items():
        if what in ("start-up wall",):
            continue
        cpu = f"  {spread(cpus[what], '.3f')} CPU s/video" if what in cpus else ""
        print(f"  {what:<40} {spread(values, '.2f')} videos/s{cpu}")
    print(
        f"  {'start-up (index of one clip)':<40} {spread(rates['start-up wall'], '.2f')} s, "
        f"{spread(cpus['start-up'], '.2f')} CPU s"
    )
    e2e = "index end to end (shots)"
    print(f"  {'unchanged re-run':<40} {spread(again_s, '.2f')} s")
    print()
    print(f"index / naive loop               {spread(ratio(e2e, 'naive loop'), '.2f')}x  (target >= 1.8x, tiny model)")
    print(f"index / decode-only limit        {spread(ratio(e2e, 'decode only (shots)'), '.1%')}  (target >= 85%, tiny)")
    print(f"index / model-only limit         {spread(ratio(e2e, 'model only'), '.1%')}  (target >= 90%, base model)")
    print(f"shots / fixed, decode only       {spread(ratio('decode only (shots)', 'decode only (fixed)'), '.1%')}")
    print(f"shots / fixed, end to end        {spread(ratio(e2e, 'index end to end (fixed)'), '.1%')}  (target >= 85%)")
    cpu_ratio = [f / s for s, f in zip(cpus[e2e], cpus["index end to end (fixed)"], strict=True)]
    print(f"shots / fixed, end to end CPU    {spread(cpu_ratio, '.1%')}  (fixed's CPU s/video over shots')")
    print(f"load average at end {os.getloadavg()[0]:.2f} (others share this machine; the lead re-measures)")


class Clock:
    """Wall time and CPU time (this process and its waited-for children: workers, the CLI) of a block."""

    def __enter__(self) -> Clock:
        self._wall = time.perf_counter()
        self._cpu = _cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = _cpu() - self._cpu


def _cpu() -> float:
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


if __name__ == "__main__":
    main()
