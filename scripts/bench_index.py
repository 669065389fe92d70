"""Indexing throughput, measured against its own baselines in one run (DESIGN.md §5, issue 3).

Builds (or reuses) a library of generated H.264 clips with ordinary GOPs, then measures with the same model:

1. the naive loop a user would write from the transformers docs: decord per file, `XCLIPProcessor`,
   `get_video_features` one video at a time;
2. decode-only throughput of the indexer's supervised workers (events consumed and dropped);
3. model-only throughput on pre-decoded pixels (the best of the index's thread setting and all cores);
4. ``xclip-search index`` end to end (a fresh CLI process: model load and worker start-up included);
5. the same command again over the unchanged library;
6. shot-aligned segments (the default) against fixed windows (``--segments fixed``): decode-only and end to end,
   in the same run, so the cost of cut detection reads as a ratio (issue 15: at least 85%).

and prints videos/s side by side with the ratios the issue sets as targets. Run it alone on the machine:

    flock /work/bench.lock python scripts/bench_index.py --clips 200 --seconds 10 --model tiny
    flock /work/bench.lock python scripts/bench_index.py --clips 40 --seconds 10 --model base

`--model base` is X-CLIP base/32 (8 frames, 224 px) with random weights: the same cost as the real one.
"""

from __future__ import annotations

import argparse
import json
import os
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--gop", type=int, default=50, help="keyframe interval in frames (25 fps)")
    ap.add_argument("--model", choices=["tiny", "base"], default="tiny")
    ap.add_argument("--naive-clips", type=int, default=None, help="clips timed in the naive loop [default: all]")
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
    load = os.getloadavg()[0]
    print(f"{len(files)} clips of {args.seconds} s at {args.width}x{args.height}, GOP {args.gop}; model {args.model}")
    print(
        f"machine: {cores} cores, load average {load:.2f} at start; index uses {res.workers} worker(s), "
        f"{res.threads} model thread(s), batch {res.batch_size}"
    )

    naive_files = files[: args.naive_clips or len(files)]
    rows: list[tuple[str, float, float]] = []  # (what, videos/s, CPU s per video)

    def report(what: str, videos: int, clock: Clock) -> float:
        rate = videos / clock.wall
        rows.append((what, rate, clock.cpu / videos))
        print(f"{what:<44} {rate:9.2f} videos/s  {clock.cpu / videos:7.3f} CPU s/video", flush=True)
        return rate

    with Clock() as clock:
        naive_loop(naive_files, model_dir)
    naive = report(f"naive loop ({len(naive_files)} clips)", len(naive_files), clock)
    with Clock() as clock:
        segments, warm_wall = decode_only(files, model_dir, res.workers, 10.0)
    clock.wall = warm_wall  # the limit: warm workers (their start-up CPU is still in the CPU figure)
    decode = report(f"decode only ({res.workers} warm worker(s))", len(files), clock)
    with Clock() as clock:
        fixed_segments, warm_wall = decode_only(files, model_dir, res.workers, 10.0, "fixed")
    clock.wall = warm_wall
    decode_fixed = report("decode only, --segments fixed", len(files), clock)
    print(f"{'':<44} segments: {segments} with shots, {fixed_segments} fixed")
    per_video = segments / len(files)
    import torch

    encoder, pixels = model_inputs(model_dir, files[:4], min(segments, max(4 * res.batch_size, 64)))
    model = 0.0
    for threads in sorted({res.threads or cores, cores}):
        torch.set_num_threads(threads)
        model_only(encoder, pixels[: res.batch_size], res.batch_size)  # warm-up
        with Clock() as clock:
            model_only(encoder, pixels, res.batch_size)
        rate = report(f"model only ({threads} thread(s), batch {res.batch_size})", len(pixels), clock)
        model = max(model, rate / per_video)

    with tempfile.TemporaryDirectory(prefix="xclip-bench-index-") as tmp:
        index = Path(tmp) / "index"
        with Clock() as clock:
            first = index_cli(lib, index, model_dir, args.index_args)
        e2e = report("xclip-search index (end to end)", len(files), clock)
        first_s = clock.wall
        with Clock() as clock:
            again = index_cli(lib, index, model_dir, args.index_args)
        again_s = clock.wall
        print(f"{'xclip-search index again (unchanged)':<44} {again_s:9.2f} s")
        print(f"first run: {first}\nre-run:    {again}")
        with Clock() as clock:
            fixed_run = index_cli(lib, Path(tmp) / "fixed", model_dir, [*args.index_args, "--segments", "fixed"])
        e2e_fixed = report("xclip-search index --segments fixed", len(files), clock)
        print(f"fixed run: {fixed_run}")
    limit = min(decode, model)
    bound = "decode" if decode <= model else "model"
    print()
    print(f"index / naive loop            {e2e / naive:6.2f}x   (target >= 1.6x with the tiny model)")
    print(f"index / decode-only limit     {e2e / decode:6.1%}   (target >= 80% with the tiny model)")
    print(f"index / model-only limit      {e2e / model:6.1%}   (target >= 90% with the base model)")
    print(f"index / slower limit ({bound}) {e2e / limit:6.1%}")
    print(f"first run / unchanged re-run  {first_s / again_s:6.1f}x   (target >= 50x)")
    print(f"shots / fixed, decode only    {decode / decode_fixed:6.1%}   (cut detection's cost, worst case)")
    print(f"shots / fixed, end to end     {e2e / e2e_fixed:6.1%}   (target >= 85%)")
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
