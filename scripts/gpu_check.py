"""The GPU path checked on a GPU in one run, with a figures table (issue 18). Started by scripts/gpu_check.sh.

    bash scripts/gpu_check.sh                 # on an NVIDIA machine: installs the CUDA builds, then these checks
    bash scripts/gpu_check.sh --dry-run       # anywhere: the same code paths on the CPU, small sizes (CI runs it)

1. scores: CUDA against CPU on a random-init checkpoint of xclip-base-patch32's shape and on the bundled demo
   model: float32 must agree within 1e-4; float16 (half weights) and bfloat16 (autocast) errors and the
   top-10 overlap are reported. The GPU side goes through `indexer.feed.ModelFeed` (pinned buffers, copy
   stream, GPU normalisation), as indexing does.
2. indexing: a generated library indexed on the GPU with several decode worker counts: segments/s in the
   steady part of the run, GPU utilisation (NVML samples), and the fewest workers within 10 % of the best.
   Then once with ``--decoder nvdec``, and the index must record that decoder.
3. ANN: an IVF-PQ index over 1M clustered 512-d vectors built with GPU FAISS and with CPU FAISS (the project's
   own `store.ann.build_index`): build seconds and recall@10 against the exact neighbours, with and without
   the exact refine that search applies.
4. GPU decode: NVDEC frames against decord's at the same sampled indices (frame counts, pixel differences)
   and the effect on embeddings and scores; decode speed of both in one process.

``--dry-run``: the CPU stands in for the GPU (the tiny model instead of base size, CPU FAISS, the nvdec
wrapper in its CPU mode), float16 is skipped (CPU only runs float32 and bfloat16 autocast), sizes are small.
Exit status: 0 when every pass/fail check passed, 1 otherwise; the table is printed either way, and
``--json FILE`` writes the same figures for machines.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

TEXTS = [
    "a red square moving to the right",
    "a person riding a bike",
    "a dog catching a frisbee",
    "waves on a beach",
    "a blue circle growing",
    "cars on a highway at night",
    "someone cooking in a kitchen",
    "a green shape blinking",
    "a crowd at a concert",
    "snow falling in a forest",
    "a slow pan over a textured wall",
    "two people talking",
    "a bird flying across the sky",
    "a scoreboard on a screen",
    "a train arriving at a station",
    "an empty room",
]


@dataclass(frozen=True)
class Sizes:
    """How big each check is: the full run fits in 8 minutes on one data-centre GPU with 16 cores."""

    score_segments: int
    score_texts: int
    clips: int
    clip_seconds: int
    clip_size: tuple[int, int]
    segment_seconds: float
    workers: tuple[int, ...]
    vectors: int
    dim: int
    ann_budget: int  # bytes: the PQ code size the plan picks fits it (64 bytes a vector at 1M x 512)
    queries: int
    decode_clips: int

    @classmethod
    def full(cls) -> Sizes:
        return cls(64, 16, 48, 10, (640, 360), 2.0, (2, 4, 8, 14), 1_000_000, 512, 1 << 34, 1000, 4)

    @classmethod
    def dry(cls) -> Sizes:
        return cls(12, 4, 3, 2, (160, 96), 0.5, (1, 2), 4000, 64, 200_000, 50, 2)


@dataclass
class Figure:
    section: str
    name: str
    value: str
    passed: bool | None = None  # None: a figure to report, not a pass/fail check
    note: str = ""


@dataclass
class Report:
    title: str
    figures: list[Figure] = field(default_factory=list)

    def add(self, section: str, name: str, value: Any, passed: bool | None = None, note: str = "") -> None:
        text = _fmt(value)
        self.figures.append(Figure(section, name, text, passed, note))
        mark = "" if passed is None else (" [pass]" if passed else " [FAIL]")
        print(f"  {section}: {name} = {text}{mark}{(' (' + note + ')') if note else ''}", flush=True)

    @property
    def ok(self) -> bool:
        return all(f.passed is not False for f in self.figures)

    def table(self) -> str:
        lines = [self.title, "", "| check | figure | value | pass |", "|---|---|---|---|"]
        for f in self.figures:
            verdict = "" if f.passed is None else ("yes" if f.passed else "**no**")
            value = f"{f.value} ({f.note})" if f.note else f.value
            lines.append(f"| {f.section} | {f.name} | {value} | {verdict} |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "ok": self.ok, "figures": [dataclasses.asdict(f) for f in self.figures]}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.2e}"
    return str(value)


# -- environment ------------------------------------------------------------------------------------------


def describe_machine(device: str) -> str:
    import torch

    parts = [f"torch {torch.__version__}"]
    if device == "cuda":
        parts.insert(0, torch.cuda.get_device_name(0))
        with contextlib.suppress(Exception):
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            parts.append(f"driver {out.stdout.strip().splitlines()[0]}")
    else:
        parts.insert(0, f"CPU only ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)")
    with contextlib.suppress(Exception):
        import faiss

        parts.append(f"faiss {faiss.__version__} ({faiss.get_num_gpus() if hasattr(faiss, 'get_num_gpus') else 0} GPU)")
    return ", ".join(parts)


class GpuSampler:
    """GPU utilisation (%) sampled every 0.1 s in a thread through NVML (nvidia-ml-py), else nvidia-smi."""

    def __init__(self, enabled: bool) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._read: Callable[[], float] | None = self._nvml() if enabled else None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _nvml(self) -> Callable[[], float] | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:

            def smi() -> float:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                )
                return float(out.stdout.strip().splitlines()[0])

            return smi

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            if self._read is None:
                return
            with contextlib.suppress(Exception):
                self.samples.append((time.monotonic(), self._read()))

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def mean(self, start: float, end: float) -> float | None:
        window = [u for t, u in self.samples if start <= t <= end]
        return float(np.mean(window)) if window else None


# -- 1. scores --------------------------------------------------------------------------------------------


def make_crops(n: int, frames: int, size: int, seed: int = 0) -> np.ndarray:
    """``(n, T, size, size, 3)`` uint8 segments with moving content, as decode workers deliver them."""
    from xclip_search.testing import synthetic_frames

    return np.stack([synthetic_frames(frames, size, size, seed=seed + i) for i in range(n)])


def embed(checkpoint: Any, crops: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """``v``, ``Z`` of `crops` through `ModelFeed`'s staged path (on CUDA: pinned buffers, a copy stream)."""
    from indexer.feed import ModelFeed
    from xclip_search.encoder import XClipEncoder

    # overlap: the staged path with one batch in flight, on the CPU too (a dry run checks its values)
    feed: ModelFeed[int] = ModelFeed(XClipEncoder(checkpoint), checkpoint.pixels, batch_size=batch, overlap=True)
    out = []
    for i in range(0, len(crops), batch):
        out += feed.push(crops[i : i + batch], i)
    out += feed.drain()
    out.sort(key=lambda item: item[0])
    return np.concatenate([e.v for _, e in out]), np.concatenate([e.z for _, e in out])


def scores(checkpoint: Any, crops: np.ndarray, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(segments x texts) exact prompted scores, and the segments' ``v``."""
    from xclip_search.encoder import XClipEncoder
    from xclip_search.prompting import PromptScorer

    v, z = embed(checkpoint, crops)
    t = XClipEncoder(checkpoint).encode_texts(texts)
    return PromptScorer(checkpoint.model).score(v, z, t), v


def top_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean share of the top-k segments per text (column) that two score matrices agree on."""
    k = min(k, a.shape[0])
    shared = [len(set(np.argsort(-a[:, j])[:k]) & set(np.argsort(-b[:, j])[:k])) / k for j in range(a.shape[1])]
    return float(np.mean(shared))


def check_scores(report: Report, sizes: Sizes, device: str, work: Path, models: dict[str, Path | str]) -> None:
    import torch

    from xclip_search.checkpoint import load_checkpoint

    texts = TEXTS[: sizes.score_texts]
    for name, model in models.items():
        reference = load_checkpoint(str(model), device="cpu")
        crops = make_crops(sizes.score_segments, reference.num_frames, reference.identity.image_size)
        ref_scores, ref_v = scores(reference, crops, texts)
        del reference
        for dtype in ("float32", "float16", "bfloat16"):
            label = f"{name} {dtype}"
            if device == "cpu":
                if dtype == "float16":
                    report.add("scores", f"{label} vs CPU float32", "skipped", note="dry run: CUDA only")
                    continue
                ckpt = load_checkpoint(str(model), device="cpu")
                if dtype == "bfloat16":  # the autocast path, on the CPU (load_checkpoint allows it on CUDA only)
                    ckpt = dataclasses.replace(ckpt, dtype=torch.bfloat16)
            else:
                ckpt = load_checkpoint(str(model), device=device, dtype=dtype)
            got, v = scores(ckpt, crops, texts)
            del ckpt
            if device == "cuda":
                torch.cuda.empty_cache()
            err = float(np.abs(got - ref_scores).max())
            if dtype == "float32":
                report.add("scores", f"{label}: max abs score error vs CPU", err, passed=err <= 1e-4, note="limit 1e-4")
            else:
                report.add("scores", f"{label}: max abs score error vs CPU float32", err)
            report.add("scores", f"{label}: max abs error of v vs CPU", float(np.abs(v - ref_v).max()))
            report.add("scores", f"{label}: top-10 overlap with CPU", top_overlap(got, ref_scores))


# -- 2. indexing ------------------------------------------------------------------------------------------


def make_library(directory: Path, sizes: Sizes, seed: int = 0) -> list[Path]:
    """Generated H.264 clips (textured pans with a moving shape), written in parallel; reused when present."""
    from bench_index import _write_clip

    directory.mkdir(parents=True, exist_ok=True)
    width, height = sizes.clip_size
    jobs = [
        (str(directory / f"clip{i:03d}.mp4"), sizes.clip_seconds, width, height, 25, seed + i)
        for i in range(sizes.clips)
    ]
    todo = [job for job in jobs if not Path(job[0]).exists()]
    if todo:
        with ProcessPoolExecutor(max_workers=max(1, min(len(todo), os.cpu_count() or 1))) as pool:
            list(pool.map(_write_clip, todo))
    return [Path(job[0]) for job in jobs]


class _Timeline:
    """Progress receiver that timestamps encoded segments: the steady rate excludes start-up and the tail."""

    def __init__(self) -> None:
        self.stamps: list[tuple[float, int]] = []
        self.started = time.monotonic()

    def start(self, total_files: int) -> None:
        self.started = time.monotonic()  # decoding starts now; the model loads meanwhile

    def file_done(self, outcome: Any) -> None:
        pass

    def segments_encoded(self, count: int) -> None:
        self.stamps.append((time.monotonic(), count))

    def steady(self) -> tuple[float, float, float]:
        """(segments/s, window start, window end) from the first encoded batch to the last; with fewer than
        three batches (small runs), from the start of decoding, model loading included."""
        if not self.stamps:
            return 0.0, 0.0, 0.0
        if len(self.stamps) < 3:
            first, last = self.started, self.stamps[-1][0]
            done = sum(c for _, c in self.stamps)
        else:
            first, last = self.stamps[0][0], self.stamps[-1][0]
            done = sum(c for _, c in self.stamps[1:])
        return (done / (last - first) if last > first else 0.0), first, last


def index_once(
    library: Path, target: Path, model: str, workers: int, device: str, sizes: Sizes, decoders: tuple[str, ...]
) -> tuple[Any, _Timeline, GpuSampler]:
    from indexer import IndexOptions, run_index

    timeline = _Timeline()
    opts = IndexOptions(
        workers=workers, device=device, segment_seconds=sizes.segment_seconds, decoders=decoders, commit_every=4096
    )
    with GpuSampler(enabled=device == "cuda") as sampler:
        result = run_index([str(library)], target, model=model, options=opts, progress=timeline)
    return result, timeline, sampler


def check_indexing(report: Report, sizes: Sizes, device: str, work: Path, model: str, nvdec: str) -> None:
    from xclip_search.store.catalog import Catalog

    library = work / "library"
    started = time.monotonic()
    make_library(library, sizes)
    report.add("index", "library", f"{sizes.clips} clips of {sizes.clip_seconds} s at {sizes.clip_size[0]}x"
               f"{sizes.clip_size[1]}", note=f"written in {time.monotonic() - started:.0f} s")  # fmt: skip
    rates: dict[int, float] = {}
    for workers in sizes.workers:
        result, timeline, sampler = index_once(
            library, work / f"index-w{workers}", model, workers, device, sizes, ("decord", "pyav")
        )
        rate, t0, t1 = timeline.steady()
        rates[workers] = rate
        util = sampler.mean(t0, t1)
        report.add(
            "index",
            f"decord, {workers} worker(s): segments/s",
            rate,
            passed=result.count("failed") == 0 and result.segments > 0,
            note=f"{result.segments} segments; GPU busy {_fmt(util) + ' %' if util is not None else 'n/a'}",
        )
    best = max(rates.values())
    enough = min(w for w, r in rates.items() if r >= 0.9 * best) if best > 0 else None
    report.add("index", "decode workers to reach 90 % of the best rate", enough, note=f"tried {list(rates)}")
    workers = max(sizes.workers)
    target = work / "index-nvdec"
    result, timeline, sampler = index_once(library, target, model, workers, device, sizes, (nvdec, "decord", "pyav"))
    rate, t0, t1 = timeline.steady()
    util = sampler.mean(t0, t1)
    report.add(
        "index",
        f"nvdec, {workers} worker(s): segments/s",
        rate,
        passed=result.count("failed") == 0 and result.segments > 0,
        note=f"GPU busy {_fmt(util) + ' %' if util is not None else 'n/a'}",
    )
    catalog = Catalog.open(target)
    try:
        raw = catalog.get_meta("decoders")
    finally:
        catalog.close()
    recorded = json.loads(raw) if raw else []
    report.add("index", "decoders the nvdec index records", recorded, passed=recorded == [nvdec])


# -- 3. ANN -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Vectors:
    """The part of a shard `build_index` reads: ids and ``v``."""

    ids: np.ndarray
    v: np.ndarray


def clustered_vectors(count: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around `count` / 500 centres: structure like real embeddings, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(8, count // 500), dim), dtype=np.float32)
    out = np.empty((count, dim), dtype=np.float32)
    step = 100_000
    for i in range(0, count, step):
        n = min(step, count - i)
        out[i : i + n] = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim), np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def exact_top(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    for i in range(0, len(data), 50_000):
        s = queries @ data[i : i + 50_000].T
        top = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, top, axis=1)], axis=1)
        cand_i = np.concatenate([best_i, top + i], axis=1)
        order = np.argsort(-cand_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, order, axis=1), np.take_along_axis(cand_i, order, axis=1)
    return best_i


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def check_faiss(report: Report, sizes: Sizes, device: str) -> None:
    from xclip_search.store.ann import build_index, gpu_count, plan_ann

    started = time.monotonic()
    data = clustered_vectors(sizes.vectors, sizes.dim)
    rng = np.random.default_rng(1)
    queries = data[rng.choice(len(data), sizes.queries, replace=False)] + 0.05 * rng.standard_normal(
        (sizes.queries, sizes.dim), np.float32
    )
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    truth = exact_top(data, queries, 10)
    report.add("ann", "vectors", f"{sizes.vectors} x {sizes.dim}", note=f"data and exact top-10 in "
               f"{time.monotonic() - started:.0f} s")  # fmt: skip
    plan = plan_ann(sizes.vectors, sizes.dim, kind="ivfpq", memory_budget=sizes.ann_budget)
    shards = [_Vectors(np.arange(len(data), dtype=np.int64), data)]
    live = shards[0].ids
    legs = [("GPU FAISS", True), ("CPU FAISS", False)] if gpu_count() > 0 else [("CPU FAISS", False)]
    if gpu_count() == 0:
        report.add("ann", "GPU FAISS build", "skipped", passed=device == "cpu", note="FAISS sees no GPU")
    times = {}
    for name, use_gpu in legs:
        started = time.monotonic()
        index = build_index(plan, shards, live, sizes.dim, use_gpu=use_gpu)  # type: ignore[arg-type]
        times[name] = time.monotonic() - started
        index.nprobe = int(plan.params["nprobe"])
        _d, found = index.search(queries, 10)
        _d, wide = index.search(queries, 10 * plan.refine)
        refined = np.stack(
            [row[np.argsort(-(data[row.clip(0)] @ q))[:10]] for row, q in zip(wide, queries, strict=True)]
        )
        r_pq, r_refined = recall(found, truth), recall(refined, truth)
        params = f"IVF{plan.params['nlist']},PQ{plan.params['m']}, nprobe {plan.params['nprobe']}"
        report.add("ann", f"{name}: build seconds", times[name], note=params)
        report.add("ann", f"{name}: recall@10 (PQ scores)", r_pq)
        report.add("ann", f"{name}: recall@10 with the x{plan.refine} exact refine", r_refined, passed=r_refined >= 0.8)
    if len(times) == 2:
        report.add("ann", "CPU / GPU build time", times["CPU FAISS"] / max(times["GPU FAISS"], 1e-9))


# -- 4. GPU decode ----------------------------------------------------------------------------------------


def _frames(
    decoder: Any, path: str, num_frames: int, segment_seconds: float
) -> tuple[int, list[tuple[list[int], np.ndarray]]]:
    """The frame count and, per segment, its T sampled indices and the decoded frames of the unique ones."""
    from indexer.segments import plan_segments
    from xclip_search.sampling import sample_frame_indices

    video = decoder.open(path)
    try:
        info = video.info
        out = []
        for plan in plan_segments(info.num_frames, info.fps, segment_seconds):
            indices = sample_frame_indices(plan.frame_start, plan.frame_end, num_frames)
            out.append((indices, np.stack(list(video.iter_frames(sorted(set(indices)))))))
        return info.num_frames, out
    finally:
        video.close()


def _segment_crops(indices: list[int], frames: np.ndarray, pixels: Any) -> np.ndarray:
    """The T model frames of one segment, repeats included, as a decode worker builds them."""
    from xclip_search.pixels import resize_and_crop

    crops = dict(zip(sorted(set(indices)), resize_and_crop(frames, pixels), strict=True))
    return np.stack([crops[i] for i in indices])


def check_decode(
    report: Report, sizes: Sizes, device: str, work: Path, models: dict[str, Path | str], nvdec: str
) -> None:
    from indexer.decoders import get_decoder
    from xclip_search.checkpoint import load_checkpoint

    clips = make_library(work / "library", sizes)[: sizes.decode_clips]
    clips += [ROOT / "tests" / "data" / "bikes.mp4", ROOT / "tests" / "data" / "bigbuckbunny.mp4"]  # real footage
    gpu, cpu = get_decoder(nvdec), get_decoder("decord")
    checkpoints = {name: load_checkpoint(str(model), device=device) for name, model in models.items()}
    num_frames = {c.num_frames for c in checkpoints.values()}
    assert len(num_frames) == 1, "the models must read the same frames"
    frames_per_segment = num_frames.pop()
    counts_equal, max_diff, mean_diffs = True, 0, []
    pairs: list[tuple[list[int], np.ndarray, np.ndarray]] = []
    t_gpu = t_cpu = 0.0
    frames_total = 0
    for clip in clips:
        started = time.monotonic()
        n_gpu, f_gpu = _frames(gpu, str(clip), frames_per_segment, sizes.segment_seconds)
        t_gpu += time.monotonic() - started
        started = time.monotonic()
        n_cpu, f_cpu = _frames(cpu, str(clip), frames_per_segment, sizes.segment_seconds)
        t_cpu += time.monotonic() - started
        counts_equal &= n_gpu == n_cpu and len(f_gpu) == len(f_cpu)
        for (idx_a, a), (idx_b, b) in zip(f_gpu, f_cpu, strict=False):
            frames_total += len(a)
            if a.shape != b.shape or idx_a != idx_b:
                counts_equal = False
                continue
            d = np.abs(a.astype(np.int16) - b.astype(np.int16))
            max_diff = max(max_diff, int(d.max()))
            mean_diffs.append(float(d.mean()))
            pairs.append((idx_a, a, b))
    report.add("decode", f"{nvdec} vs decord: same frame counts, indices and shapes", counts_equal,
               passed=counts_equal, note=f"{len(clips)} clips, {frames_total} frames")  # fmt: skip
    report.add("decode", "pixel difference: max abs (0-255)", max_diff)
    report.add("decode", "pixel difference: mean abs (0-255)", float(np.mean(mean_diffs)) if mean_diffs else "n/a")
    report.add("decode", f"{nvdec} frames/s (one process, seeks included)", frames_total / max(t_gpu, 1e-9))
    report.add("decode", "decord frames/s (one process, seeks included)", frames_total / max(t_cpu, 1e-9))
    for name, ckpt in checkpoints.items():
        if not pairs:
            break
        crops_gpu = np.stack([_segment_crops(idx, a, ckpt.pixels) for idx, a, _ in pairs])
        crops_cpu = np.stack([_segment_crops(idx, b, ckpt.pixels) for idx, _, b in pairs])
        s_gpu, v_gpu = scores(ckpt, crops_gpu, TEXTS[: sizes.score_texts])
        s_cpu, v_cpu = scores(ckpt, crops_cpu, TEXTS[: sizes.score_texts])
        report.add("decode", f"{name}: min cos(v from {nvdec}, v from decord)", float(np.min(np.sum(v_gpu * v_cpu, 1))))
        report.add("decode", f"{name}: max abs score change from decoding", float(np.abs(s_gpu - s_cpu).max()))
        report.add("decode", f"{name}: top-10 overlap, {nvdec} vs decord frames", top_overlap(s_gpu, s_cpu))


# -- main -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def section(report: Report, name: str, deadline: float) -> Iterator[bool]:
    """Run a section unless time is up; a failure is reported as a failed figure, not the end of the run."""
    if time.monotonic() > deadline:
        report.add(name, "section", "skipped", passed=False, note="out of time")
        yield False
        return
    print(f"[{name}]", flush=True)
    started = time.monotonic()
    try:
        yield True
    except Exception as exc:  # every section runs even when one breaks: the table shows what broke
        report.add(name, "error", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
                   passed=False)  # fmt: skip
    report.add(name, "section seconds", time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU, small sizes, nothing installed")
    ap.add_argument("--work", type=Path, default=None, help="working directory [default: a temporary one]")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    ap.add_argument("--table", type=Path, default=None, help="also write the table (Markdown) to this file")
    ap.add_argument("--vectors", type=int, default=None, help="vectors in the ANN check [default: 1M; dry 4000]")
    ap.add_argument("--workers", default=None, help="decode worker counts to try, e.g. 2,4,8")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds after which remaining sections are skipped")
    ap.add_argument("--only", default=None, help="comma-separated sections: scores,index,ann,decode")
    args = ap.parse_args(argv)

    sizes = Sizes.dry() if args.dry_run else Sizes.full()
    if args.vectors:
        sizes = dataclasses.replace(sizes, vectors=args.vectors)
    if args.workers:
        sizes = dataclasses.replace(sizes, workers=tuple(int(x) for x in args.workers.split(",")))
    only = set(args.only.split(",")) if args.only else {"scores", "index", "ann", "decode"}
    started = time.monotonic()
    deadline = started + args.budget

    import torch

    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available to torch here; use --dry-run on a machine without a GPU.")
        return 1
    if args.dry_run:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    nvdec = "indexer.gpudecode:CPU_MODE" if args.dry_run else "nvdec"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "dry run (CPU stands in for the GPU)" if args.dry_run else "GPU run"
    report = Report(f"xclip-search GPU check, {mode}: {describe_machine(device)}; {when}")
    print(report.title, flush=True)

    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu-check-")))
        work.mkdir(parents=True, exist_ok=True)
        from xclip_search.testing import make_base_checkpoint, make_tiny_checkpoint

        if args.dry_run:
            small = work / "tiny-model"
            if not (small / "config.json").exists():
                make_tiny_checkpoint(small)
            model = str(small)
            models: dict[str, Path | str] = {"tiny (stands in for base)": small, "demo": "demo"}
        else:
            base = work / "base-model"
            if not (base / "config.json").exists():
                make_base_checkpoint(base)
            model = str(base)
            models = {"base (random init)": base, "demo": "demo"}
        if "scores" in only:
            with section(report, "scores", deadline) as go:
                if go:
                    check_scores(report, sizes, device, work, models)
        if "index" in only:
            with section(report, "index", deadline) as go:
                if go:
                    check_indexing(report, sizes, device, work, model, nvdec)
        if "ann" in only:
            with section(report, "ann", deadline) as go:
                if go:
                    check_faiss(report, sizes, device)
        if "decode" in only:
            with section(report, "decode", deadline) as go:
                if go:
                    check_decode(report, sizes, device, work, models, nvdec)

    report.add("total", "seconds", time.monotonic() - started)
    table = report.table()
    print()
    print(table)
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=1))
    if args.table:
        args.table.write_text(table + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
