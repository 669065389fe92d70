#!/usr/bin/env python
"""Query engine at scale: latency, recall, rerank throughput, memory and disk on synthetic indexes.

    flock /work/bench.lock python scripts/bench_query.py --sizes 100000,1000000 --workdir /tmp/xq-bench

For each size it builds a real index (IndexWriter: catalog, shards, ANN chosen by `plan_ann`) at the base
model's shapes (D = 512, N = 49 tokens), with ``Z`` memory-mapped from disk, and prints from one run:

- p50/p99 latency of text-to-results, text encoding excluded (synthetic ``t``) and included (real strings through
  the base text tower), first stage and rerank separately;
- recall@10 of the two-stage search against exhaustive exact scoring of every segment (sizes <= --exhaustive-max),
  for several --candidates values, with the flat index and with IVF-PQ forced; at larger sizes against the exact
  scores of the 5,000 best first-stage candidates of an exact scan (at 100k the exhaustive top-10 never lay
  beyond rank 5,000 - the script prints the deepest rank it saw);
- rerank throughput (pairs/s) of the single-token shortcut against transformers' own `XCLIPPromptGenerator`
  on the same pairs, and their largest score difference;
- the score error of storing ``Z`` as float16, memory (RSS) and disk per segment;
- with --row-checks, the cost of checking every row's hash before its score is used (issue 12): the same
  queries timed with the checks on and off, interleaved (alternating which goes first), printed as a ratio.
- with --text-tracks, the cost of subtitles (issue 16): one generated cue per segment is added to the catalog
  (a Zipf-distributed vocabulary, 6-12 words a line), then the same query strings are searched X-CLIP-only
  (``match visual``) and fused with the full-text matches (the default once an index has cues), interleaved,
  text encoding excluded (each string's embedding computed once); the difference is printed in ms. Queries:
  a third whose words are common in the cues, a third rare words or a quoted phrase, a third no cue word.
  ``--text-tracks-only`` skips every other measurement (build, then this).

Synthetic data (what makes ANN recall and the rerank meaningful; random unit vectors would make both trivial):
videos belong to topics; ``v = normalize(topic + video offset + segment offset + noise)`` with offsets in a
16-dimensional subspace of each topic, so neighbourhoods are clustered and anisotropic; ``Z`` per token mixes
the segment's ``v``, a per-topic token pattern and a per-segment low-rank term, normalised per token as after
the prompt generator's layer norm; queries are ``t`` near a topic region, scaled to the norm the base text tower
gives real strings. The model is a base-size random-init X-CLIP (full `XCLIPConfig()`, safetensors in a temp
dir). With transformers' random init the prompt term dwarfs ``t`` (|alpha·PG| ≈ 1000·|t|) and the exact score
is unrelated to the first stage, which no trained X-CLIP does; the prompt generator is therefore re-initialised
like trained transformer weights (N(0, 0.02), zero biases) and alpha set by --prompt-alpha. The script prints how
much the rerank reorders (first-stage-only recall@10), so the recall figures can be read against it.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

D, N = 512, 49
T_NORM_FALLBACK = 23.5
QUERY_WORDS = [
    "a dog catching a frisbee",
    "someone slicing bread in a kitchen",
    "a person riding a bike on a mountain road",
    "children playing football in the rain",
    "a cat jumping onto a table",
    "fireworks over a city at night",
    "a man playing guitar on stage",
    "waves crashing on rocks",
    "a car drifting around a corner",
    "people dancing at a wedding",
]


def log(msg: str) -> None:
    print(msg, flush=True)


def rss_mb(kind: str = "RssAnon") -> float:
    """Resident memory in MB: RssAnon (the process's own memory) or RssFile (mapped file pages, page cache)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{kind}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


# -- model ----------------------------------------------------------------------------------------------------


def make_model(directory: Path, alpha: float, init_std: float) -> Path:
    """Base-size random-init X-CLIP, prompt generator re-initialised as described in the module doc."""
    import torch
    from transformers import CLIPTokenizer, XCLIPConfig, XCLIPModel

    from xclip_search.testing import TOKENIZER_DIR, preprocessor_config

    torch.manual_seed(0)
    model = XCLIPModel(XCLIPConfig()).eval()
    with torch.no_grad():
        for module in model.prompts_generator.decoder.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, init_std)
                if module.bias is not None:
                    module.bias.zero_()
        model.prompts_generator.alpha.fill_(alpha)
        # The released checkpoints learn logit_scale = ln(100); random init leaves ln(1/0.07).
        model.logit_scale.fill_(math.log(100.0))
    model.save_pretrained(directory)
    CLIPTokenizer(str(TOKENIZER_DIR / "vocab.json"), str(TOKENIZER_DIR / "merges.txt")).save_pretrained(directory)
    pre = preprocessor_config(224)
    (directory / "preprocessor_config.json").write_text(json.dumps(pre))
    return directory


# -- synthetic data ---------------------------------------------------------------------------------------------


@dataclass
class Synth:
    """Clustered, anisotropic ``v``; ``Z`` correlated with ``v`` and the topic; queries near topic regions."""

    topics: int
    seed: int = 0
    rank: int = 16
    video_spread: float = 0.6
    segment_spread: float = 0.3
    noise: float = 0.15
    z_v: float = 1.0
    z_topic: float = 1.0
    z_segment: float = 1.0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        c = rng.standard_normal((self.topics, D)).astype(np.float32)
        self.centers = c / np.linalg.norm(c, axis=1, keepdims=True)
        b = rng.standard_normal((self.topics, self.rank, D)).astype(np.float32)
        self.bases = b / np.linalg.norm(b, axis=2, keepdims=True)
        import torch

        self.patterns_t = torch.from_numpy(rng.standard_normal((self.topics, N, D), dtype=np.float32))
        self.z_basis_t = torch.from_numpy((rng.standard_normal((16, N * D)) / 4).astype(np.float32))

    def _in_topic(self, g: np.ndarray, topic: np.ndarray) -> np.ndarray:
        """Rows ``g[i] @ bases[topic[i]]``: offsets inside each topic's subspace (one product per topic)."""
        out = np.empty((len(g), D), np.float32)
        for k in np.unique(topic):
            rows = np.nonzero(topic == k)[0]
            out[rows] = g[rows] @ self.bases[k]
        return out

    def videos(self, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(topic, video offset (count, D), segments per video) for `count` videos."""
        rng = np.random.default_rng(seed)
        topic = rng.integers(0, self.topics, count)
        g = rng.standard_normal((count, self.rank)).astype(np.float32) / np.sqrt(self.rank)
        offset = self._in_topic(g, topic) * self.video_spread
        n_seg = np.minimum(1 + rng.poisson(19, count), 360)
        return topic, offset.astype(np.float32), n_seg

    def segments(self, topic: np.ndarray, video_offset: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``v`` (S, D) unit and ``Z`` (S, N, D) float32 for segments with the given topic and video offset."""
        import torch

        rng = np.random.default_rng(seed)
        s = len(topic)
        g = rng.standard_normal((s, self.rank)).astype(np.float32) / np.sqrt(self.rank)
        v = self.centers[topic] + video_offset + self._in_topic(g, topic) * self.segment_spread
        v += rng.standard_normal((s, D)).astype(np.float32) * (self.noise / np.sqrt(D))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        # Three terms of unit variance per element: per token about zero mean and unit variance, as after the
        # prompt generator's layer norm (a real layer norm here would triple the generation time at 1M).
        gz = torch.from_numpy(rng.standard_normal((s, 16)).astype(np.float32))
        z = torch.mm(gz, self.z_basis_t).view(s, N, D).mul_(self.z_segment)
        z.add_(self.patterns_t.index_select(0, torch.from_numpy(topic.astype(np.int64))), alpha=self.z_topic)
        z.add_(torch.from_numpy(v)[:, None, :], alpha=self.z_v * float(np.sqrt(D)))
        z.mul_(1.0 / float(np.sqrt(self.z_segment**2 + self.z_topic**2 + self.z_v**2)))
        return v.astype(np.float32), z.numpy()

    def queries(self, count: int, t_norm: float, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        topic = rng.integers(0, self.topics, count)
        g = rng.standard_normal((count, self.rank)).astype(np.float32) / np.sqrt(self.rank)
        t = self.centers[topic] + self._in_topic(g, topic) * self.video_spread
        t += rng.standard_normal((count, D)).astype(np.float32) * (0.3 / np.sqrt(D))
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        return (t * t_norm).astype(np.float32)


def build_index(
    directory: Path, identity: Any, synth: Synth, n_segments: int, z_dtype: str, flush_every: int = 8192
) -> dict[str, float]:
    """Fill an index with `n_segments` synthetic segments through the real writer; returns timings."""
    from xclip_search.store.catalog import SegmentRecord, VideoRecord
    from xclip_search.store.writer import IndexWriter

    t0 = time.perf_counter()
    made = 0
    batch = 0
    with IndexWriter(directory, identity, z_dtype=z_dtype) as writer:
        while made < n_segments:
            topic, offset, n_seg = synth.videos(512, seed=1000 + batch)
            n_seg = np.minimum(n_seg, n_segments - made - np.concatenate([[0], np.cumsum(n_seg)[:-1]]))
            keep = n_seg > 0
            topic, offset, n_seg = topic[keep], offset[keep], n_seg[keep]
            if len(n_seg) == 0:
                break
            per_seg_topic = np.repeat(topic, n_seg)
            per_seg_offset = np.repeat(offset, n_seg, axis=0)
            v, z = synth.segments(per_seg_topic, per_seg_offset, seed=5000 + batch)
            first = writer.reserve_ids(int(n_seg.sum()))
            pos = 0
            for i, count in enumerate(n_seg.tolist()):
                vid = f"/bench/topic{topic[i]:05d}/video{batch:05d}_{i:03d}.mp4"
                segs = [
                    SegmentRecord(
                        seq=j,
                        start_s=10.0 * j,
                        end_s=10.0 * (j + 1),
                        frame_start=250 * j,
                        frame_end=250 * (j + 1),
                        id=first + pos + j,
                    )
                    for j in range(count)
                ]
                rec = VideoRecord(
                    path=vid,
                    size=1_000_000 * count,
                    mtime_ns=1,
                    status="indexed",
                    duration_s=10.0 * count,
                    fps=25.0,
                    num_frames=250 * count,
                    width=[640, 1280, 1920][i % 3],
                    height=[360, 720, 1080][i % 3],
                    codec="h264",
                )
                writer.add(rec, segs, v[pos : pos + count], z[pos : pos + count])
                pos += count
                if writer.pending_segments >= flush_every:
                    writer.flush()
            made += int(n_seg.sum())
            batch += 1
            if batch % 20 == 0:
                log(f"    {made}/{n_segments} segments written ({time.perf_counter() - t0:.0f} s)")
        writer.flush()
        written = time.perf_counter()
        writer.publish_ann()
        ann_done = time.perf_counter()
    return {"write_s": written - t0, "ann_build_s": ann_done - written}


# -- measurements -------------------------------------------------------------------------------------------------


def all_vectors(snapshot: Any) -> tuple[np.ndarray, np.ndarray]:
    ids = snapshot.live_ids()
    return ids, snapshot.vectors.gather_v(ids)


def exhaustive_exact(
    snapshot: Any, scorer: Any, t: np.ndarray, ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores (len(ids), Q) of every given segment (all live ones by default) against every query."""
    ids = snapshot.live_ids() if ids is None else ids
    out = np.empty((len(ids), len(t)), np.float32)
    step = 2048
    for i in range(0, len(ids), step):
        v, z = snapshot.vectors.gather(ids[i : i + step])
        out[i : i + step] = scorer.score(v, z, t)
    return ids, out


def recall_at(found: list[list[int]], truth: list[list[int]]) -> float:
    return float(np.mean([len(set(f) & set(g)) / len(g) for f, g in zip(found, truth, strict=True)]))


def two_stage(engine: Any, t: np.ndarray, c: int, rerank: bool = True) -> list[list[int]]:
    return [
        [h.segment_id for h in engine.search_embedding(q, top_k=10, candidates=c, per_video=False, rerank=rerank)]
        for q in t
    ]


def latency(engine: Any, t: np.ndarray, c: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {
        "total": [],
        "first_stage": [],
        "rerank": [],
        "merge": [],
        "candidates": [],
        "cpu": [],
    }
    for q in t[:5]:
        engine.search_embedding(q, top_k=10, candidates=c)
    for q in t:
        start, start_cpu = time.perf_counter(), time.process_time()
        engine.search_embedding(q, top_k=10, candidates=c)
        out["total"].append(time.perf_counter() - start)
        # CPU seconds the query used: with one thread, about its wall time on an idle machine (IO waits excluded).
        out["cpu"].append(time.process_time() - start_cpu)
        tm = engine.last_timings
        out["first_stage"].append(tm["first_stage"])
        # Reading the candidates' v/Z and scoring them exactly (the merge's own reads and scores included).
        out["rerank"].append(tm.get("gather", 0.0) + tm.get("rerank", 0.0))
        out["merge"].append(tm.get("merge", 0.0))
        out["candidates"].append(tm["candidates"])
    return out


def latency_with_text(engine: Any, count: int, c: int, tag: str) -> dict[str, list[float]]:
    """Searches from query text, cold text cache (distinct strings, cache cleared); interleaved with the same
    string through transformers' ``get_text_features`` (the text path before `xclip_search.textencode`): the
    in-run baseline for the encoding stage."""
    import torch

    from xclip_search.encoder import MAX_TEXT_TOKENS

    out: dict[str, list[float]] = {"total": [], "encode": [], "encode_transformers": []}
    tokenizer, model = engine.encoder.checkpoint.tokenizer, engine.encoder.model
    cache = getattr(engine.encoder, "text_cache", None)
    for i in range(count):
        query = f"{QUERY_WORDS[i % len(QUERY_WORDS)]} {tag} {i}"  # distinct strings: no text cache hits
        if cache is not None:
            cache.clear()
        start = time.perf_counter()
        engine.search(query, top_k=10, candidates=c)
        out["total"].append(time.perf_counter() - start)
        out["encode"].append(engine.last_timings["text_encode"])
        start = time.perf_counter()
        with torch.inference_mode():
            enc = tokenizer([query], truncation=True, max_length=MAX_TEXT_TOKENS, return_tensors="pt")
            model.get_text_features(**enc)
        out["encode_transformers"].append(time.perf_counter() - start)
    return out


def row_check_cost(engine: Any, t: np.ndarray, c: int) -> dict[str, float]:
    """Latency with and without the row checksums (`VectorView.verify_rows`), interleaved query by query."""
    view = engine.snapshot.vectors
    on: list[float] = []
    off: list[float] = []
    cpu_on: list[float] = []
    cpu_off: list[float] = []
    for q in t[:5]:
        engine.search_embedding(q, top_k=10, candidates=c)
    try:
        for i, q in enumerate(t):
            for flag in (True, False) if i % 2 == 0 else (False, True):
                view.verify_rows = flag
                start, start_cpu = time.perf_counter(), time.process_time()
                engine.search_embedding(q, top_k=10, candidates=c)
                (on if flag else off).append(time.perf_counter() - start)
                # CPU seconds: less disturbed than wall time when other processes load the cores.
                (cpu_on if flag else cpu_off).append(time.process_time() - start_cpu)
    finally:
        view.verify_rows = True
    return {
        "cpu_ratio_mean": float(np.sum(cpu_on) / np.sum(cpu_off)),
        "p50_on_ms": pct(on, 50) * 1e3,
        "p50_off_ms": pct(off, 50) * 1e3,
        "mean_on_ms": float(np.mean(on)) * 1e3,
        "mean_off_ms": float(np.mean(off)) * 1e3,
        "ratio_p50": pct(on, 50) / pct(off, 50),
        "ratio_mean": float(np.sum(on) / np.sum(off)),
    }


def add_cues(snapshot: Any, seed: int = 3) -> dict[str, Any]:
    """One generated cue per live segment (through the store's cue writer, one transaction); returns the
    vocabulary and the time it took."""
    from xclip_search.store.catalog_cues import write_cues
    from xclip_search.store.cues import Cue

    rng = np.random.default_rng(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "ve", "zu", "an", "el", "or", "is", "um"]
    vocab = sorted({"".join(rng.choice(syllables, size=int(rng.integers(2, 4)))) for _ in range(6000)})
    weights = 1.0 / np.arange(1, len(vocab) + 1)  # Zipf: a few words in many lines, most in few
    weights /= weights.sum()
    catalog = snapshot.catalog
    start = time.perf_counter()
    count = 0
    with catalog.engine.begin() as conn:
        for rows in catalog.iter_segments(snapshot.generation, batch=8192):
            by_video: dict[int, list[Cue]] = {}
            for r in rows:
                words = rng.choice(len(vocab), size=int(rng.integers(6, 13)), p=weights)
                text = " ".join(vocab[w] for w in words)
                mid = (r.start_s + r.end_s) / 2
                by_video.setdefault(r.video_id, []).append(Cue(text, mid - 1.5, mid + 1.5, "xx", "sidecar"))
            for video_id, cues in by_video.items():
                count += write_cues(conn, video_id, "sidecar", cues, "bench")
    return {"vocab": vocab, "seconds": time.perf_counter() - start, "cues": count}


def text_track_cost(engine: Any, vocab: list[str], count: int, seed: int = 5) -> dict[str, Any]:
    """Latency of the same strings X-CLIP-only and fused with the cues, interleaved; text encoding excluded."""
    rng = np.random.default_rng(seed)
    queries: list[str] = []
    for i in range(count):
        kind = i % 3
        if kind == 0:  # common words: many cues match
            queries.append(" ".join(vocab[int(w)] for w in rng.integers(0, 20, size=1 + i % 2)))
        elif kind == 1:  # a rare word, or a quoted phrase of two
            a, b = rng.integers(20, len(vocab), size=2)
            queries.append(vocab[int(a)] if i % 2 else f'"{vocab[int(a)]} {vocab[int(b)]}"')
        else:  # nothing in any cue
            queries.append(QUERY_WORDS[i % len(QUERY_WORDS)])
    encoded = {q: engine.encoder.encode_texts([q]) for q in set(queries)}
    real = engine.encoder.encode_texts
    engine.encoder.encode_texts = lambda texts: encoded[texts[0]]  # text encoding excluded from both
    visual: list[float] = []
    fused: list[float] = []
    cpu = {"visual": 0.0, "fused": 0.0}  # CPU seconds: less disturbed than wall time by other processes
    by_kind: dict[str, list[float]] = {"common": [], "rare_or_phrase": [], "no_match": []}
    matched = 0
    try:
        for q in queries[:5]:
            engine.search(q, match="visual")
            engine.search(q)
        for i, q in enumerate(queries):
            for mode in ("visual", None) if i % 2 == 0 else (None, "visual"):
                start, start_cpu = time.perf_counter(), time.process_time()
                hits = engine.search(q, top_k=10, match=mode)
                elapsed = time.perf_counter() - start
                cpu["fused" if mode is None else "visual"] += time.process_time() - start_cpu
                if mode is None:
                    fused.append(elapsed)
                    by_kind[("common", "rare_or_phrase", "no_match")[i % 3]].append(elapsed)
                    matched += any(h.match != "visual" for h in hits)
                else:
                    visual.append(elapsed)
    finally:
        engine.encoder.encode_texts = real
    return {
        "queries": len(queries),
        "queries_with_text_hits": matched,
        "visual_p50_ms": pct(visual, 50) * 1e3,
        "fused_p50_ms": pct(fused, 50) * 1e3,
        "visual_mean_ms": float(np.mean(visual)) * 1e3,
        "fused_mean_ms": float(np.mean(fused)) * 1e3,
        "diff_p50_ms": (pct(fused, 50) - pct(visual, 50)) * 1e3,
        "diff_mean_ms": float(np.mean(fused) - np.mean(visual)) * 1e3,
        "diff_cpu_mean_ms": (cpu["fused"] - cpu["visual"]) / len(queries) * 1e3,
        "cpu_ratio": cpu["fused"] / cpu["visual"],
        "fused_p50_ms_by_kind": {k: pct(v, 50) * 1e3 for k, v in by_kind.items() if v},
    }


def matmul_peak(threads: int) -> dict[str, float]:
    """The machine's float32 matrix-product rate (GFLOP/s, best of several runs) with `threads` threads: square
    1024 products and the rerank's largest shape (100 pairs through a 512 x 2048 MLP layer)."""
    import torch

    torch.set_num_threads(threads)
    out: dict[str, float] = {}
    for name, (m, k, n) in {"square_1024": (1024, 1024, 1024), "rerank_mlp_100x512x2048": (100, 512, 2048)}.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        best = float("inf")
        for _ in range(20):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        out[name] = 2 * m * k * n / best / 1e9
    out["peak"] = max(out.values())
    return out


def fmt_ms(xs: list[float]) -> str:
    return f"p50 {pct(xs, 50) * 1e3:7.1f} ms  p99 {pct(xs, 99) * 1e3:7.1f} ms"


def rerank_throughput(model: Any, scorer: Any, v: np.ndarray, z: np.ndarray, t: np.ndarray) -> dict[str, float]:
    """Pairs/s of the shortcut and of transformers' prompt generator on the same (segment, text) pairs."""
    import torch

    pg = model.prompts_generator
    tt = torch.from_numpy(t[None, :])
    vt = torch.from_numpy(v)
    zt = torch.from_numpy(z)

    def reference() -> np.ndarray:
        # transformers' layers as XCLIPPromptGenerator.forward runs them; its first step, the layer norm of the
        # visual tokens, is already applied to a stored Z (and the synthetic Z is only approximately normalized).
        with torch.inference_mode():
            text = tt.expand(len(z), 1, -1)
            state = text
            for layer in pg.decoder:
                state = layer(state, zt)
            prompted = text + pg.alpha * state
            return torch.nn.functional.cosine_similarity(vt[:, None, :], prompted, dim=-1)[:, 0].numpy()

    def ours() -> np.ndarray:
        return np.asarray(scorer.score(v, z, t[None, :])[:, 0])

    a, b = ours(), reference()
    res: dict[str, float] = {"max_abs_diff": float(np.abs(a - b).max())}
    for name, fn, reps in (("shortcut", ours, 7), ("transformers", reference, 3)):
        wall, cpu = float("inf"), float("inf")
        for _ in range(reps):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall = min(wall, time.perf_counter() - start)
            cpu = min(cpu, time.process_time() - start_cpu)
        res[f"{name}_pairs_per_s"] = len(z) / wall
        res[f"{name}_pairs_per_cpu_s"] = len(z) / cpu
    res["speedup"] = res["shortcut_pairs_per_s"] / res["transformers_pairs_per_s"]
    res["speedup_cpu"] = res["shortcut_pairs_per_cpu_s"] / res["transformers_pairs_per_cpu_s"]
    return res


def float16_error(scorer: Any, synth: Synth, t: np.ndarray) -> dict[str, float]:
    """Score error of Z stored as float16 against float32, on fresh segments of one topic mix."""
    topic, offset, _ = synth.videos(64, seed=77)
    v, z = synth.segments(np.repeat(topic, 16), np.repeat(offset, 16, axis=0), seed=78)
    exact = scorer.score(v, z, t)
    half = scorer.score(v, z.astype(np.float16).astype(np.float32), t)
    err = np.abs(exact - half)
    order_exact = np.argsort(-exact, axis=0)[:10]
    order_half = np.argsort(-half, axis=0)[:10]
    same = np.mean([len(set(order_exact[:, j]) & set(order_half[:, j])) / 10 for j in range(t.shape[0])])
    return {"max_abs": float(err.max()), "mean_abs": float(err.mean()), "top10_overlap": float(same)}


def memory_probe(index_dir: Path, queries: np.ndarray) -> dict[str, float]:
    """Resident memory of a fresh process: before and after opening the index, loading the model, querying."""
    import subprocess

    qfile = index_dir.parent / "probe-queries.npy"
    np.save(qfile, queries)
    code = (
        "import json, sys, numpy as np\n"
        f"sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'scripts')!r})\n"
        "from bench_query import rss_mb\n"
        "start = rss_mb()\n"
        "from xclip_search import Index\n"
        "import xclip_search.store.snapshot, faiss, torch\n"
        "start = rss_mb()\n"
        f"index = Index.open({str(index_dir)!r})\n"
        "opened = rss_mb()\n"
        "engine = index.engine\n"
        "model = rss_mb()\n"
        f"for q in np.load({str(qfile)!r}): engine.search_embedding(q)\n"
        "v = index.snapshot.vectors\n"
        "print(json.dumps({'start': start, 'opened': opened, 'model': model, 'queried': rss_mb(),"
        " 'mapped': rss_mb('RssFile'), 'ids_bytes': v._ids.nbytes + v._shard.nbytes + v._row.nbytes}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    qfile.unlink()
    return {k: float(v) for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def dir_bytes(path: Path) -> dict[str, int]:
    def size(p: Path) -> int:
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.exists() else 0

    return {
        "vectors": size(path / "vectors"),
        "catalog": sum(f.stat().st_size for f in path.glob("catalog.sqlite*")),
        "ann": size(path / "ann"),
    }


# -- one size -------------------------------------------------------------------------------------------------------


def bench_size(args: argparse.Namespace, n: int, model_dir: Path, work: Path, results: dict[str, Any]) -> None:
    from xclip_search import Index
    from xclip_search.checkpoint import load_checkpoint
    from xclip_search.store.writer import IndexWriter

    z_dtype = args.z_dtype_large if n > args.exhaustive_max else args.z_dtype_small
    log(f"\n== {n} segments (Z stored as {z_dtype}); load average {load_avg()}")
    identity = load_checkpoint(str(model_dir), device="cpu").identity
    index_dir = work / f"index-{n}"
    synth = Synth(topics=max(50, n // 500), seed=1)
    if args.keep and (index_dir / "manifest.json").exists():
        build = {"write_s": float("nan"), "ann_build_s": float("nan")}
        log("  reusing the kept index")
        from xclip_search.store.ann import plan_ann
        from xclip_search.store.manifest import read_manifest

        kept = read_manifest(index_dir).ann
        if kept is None or kept.kind != plan_ann(kept.count, D).kind:
            with IndexWriter(index_dir, identity) as w:
                t0 = time.perf_counter()
                w.publish_ann(force=True, kind="auto")
                build["ann_build_s"] = time.perf_counter() - t0
            log(f"  rebuilt its ANN with the current size rule in {build['ann_build_s']:.1f} s")
    else:
        shutil.rmtree(index_dir, ignore_errors=True)
        build = build_index(index_dir, identity, synth, n, z_dtype)
        log(f"  built: write {build['write_s']:.0f} s, ANN {build['ann_build_s']:.1f} s")
    with Index.open(index_dir) as index:
        info = index.info()
        engine = index.engine
        started = time.perf_counter()
        index.load_model()  # the model and the segment layout in memory: the state a server searches in
        log(f"  model and segment layout loaded in {time.perf_counter() - started:.1f} s")
        log(f"  ANN: {info['ann']['type']} {info['ann']['params']} ({info['ann']['reason']})")
        t_norm = float(np.mean(np.linalg.norm(engine.encoder.encode_texts(QUERY_WORDS), axis=1)))
        log(f"  |t| of real strings through the base text tower: {t_norm:.2f} (synthetic queries use it)")
        t_lat = synth.queries(args.queries, t_norm, seed=11)
        t_rec = synth.queries(args.exhaustive_queries, t_norm, seed=12)
        snap = index.snapshot
        row: dict[str, Any] = {"segments": n, "z_dtype": z_dtype, "build": build, "ann": info["ann"]}
        if args.text_tracks:
            import faiss
            import torch

            torch.set_num_threads(1)
            faiss.omp_set_num_threads(1)
            made = add_cues(snap)
            cost = text_track_cost(engine, made["vocab"], args.queries)
            row["text_tracks"] = {"cues": made["cues"], "write_s": made["seconds"], **cost}
            log(
                f"  text tracks: {made['cues']} cues written in {made['seconds']:.0f} s; {cost['queries']} queries "
                f"({cost['queries_with_text_hits']} with text hits), interleaved, 1 thread, text encoding excluded: "
                f"X-CLIP only p50 {cost['visual_p50_ms']:.2f} ms (mean {cost['visual_mean_ms']:.2f}), fused with "
                f"cues p50 {cost['fused_p50_ms']:.2f} ms (mean {cost['fused_mean_ms']:.2f}) -> difference p50 "
                f"{cost['diff_p50_ms']:+.2f} ms, mean {cost['diff_mean_ms']:+.2f} ms, CPU time per query "
                f"{cost['diff_cpu_mean_ms']:+.2f} ms (ratio {cost['cpu_ratio']:.3f}; target <= 10 ms; "
                f"fused p50 by query kind {', '.join(f'{k} {v:.2f}' for k, v in cost['fused_p50_ms_by_kind'].items())}"
                f"; load {load_avg()})"
            )
            if args.text_tracks_only:
                results["sizes"].append(row)
                if not args.keep:
                    shutil.rmtree(index_dir, ignore_errors=True)
                return

        # Reference rankings: exhaustive exact scores, or the exact scores of the best 5,000 by an exact scan.
        start = time.perf_counter()
        truth: list[list[int]] = []
        if args.latency_only:
            v_all = None
        elif n <= args.exhaustive_max:
            ids, exact = exhaustive_exact(snap, engine.scorer, t_rec)
            live, v_all = ids, snap.vectors.gather_v(ids)
            coarse_all = v_all @ (t_rec / np.linalg.norm(t_rec, axis=1, keepdims=True)).T
            rank_of = np.argsort(np.argsort(-coarse_all, axis=0), axis=0)
            truth = [ids[np.argsort(-exact[:, j])[:10]].tolist() for j in range(len(t_rec))]
            deepest = [int(rank_of[np.argsort(-exact[:, j])[:10], j].max()) for j in range(len(t_rec))]
            row["reference"] = "exhaustive exact scores of every segment"
            row["exact_top10_coarse_rank"] = {"p50": pct(deepest, 50), "p90": pct(deepest, 90), "max": max(deepest)}
            log(
                f"  exhaustive exact scoring of {len(ids)} x {len(t_rec)} pairs: {time.perf_counter() - start:.0f} s; "
                f"deepest first-stage rank of an exact top-10 hit: median {pct(deepest, 50):.0f}, "
                f"p90 {pct(deepest, 90):.0f}, max {max(deepest)}"
            )
        else:
            live, v_all = all_vectors(snap)
            units = t_rec / np.linalg.norm(t_rec, axis=1, keepdims=True)
            truth = []
            for j in range(len(t_rec)):
                top = np.argsort(-(v_all @ units[j]))[:5000]
                _, ex = exhaustive_exact(snap, engine.scorer, t_rec[j : j + 1], live[top])
                truth.append(live[top][np.argsort(-ex[:, 0])[:10]].tolist())
            row["reference"] = "exact scores of the 5,000 best of an exact first-stage scan"
            log(f"  reference (exact scores of the best 5,000 of an exact scan): {time.perf_counter() - start:.0f} s")
        del v_all
        gc.collect()

        kinds = [] if args.latency_only else [info["ann"]["type"]]
        if kinds and n <= args.exhaustive_max:
            kinds.append("flat" if kinds[0] != "flat" else "ivfpq")
        row["recall"] = {}
        for kind in kinds:
            if kind != info["ann"]["type"]:
                with IndexWriter(index_dir, identity) as w:
                    t0 = time.perf_counter()
                    w.publish_ann(force=True, kind=kind)
                    log(f"  rebuilt the ANN as {kind} in {time.perf_counter() - t0:.1f} s")
                index.refresh()
                engine = index.engine
                log(f"  ANN: {index.info()['ann']['params']}")
            rec = {"first_stage_only": recall_at(two_stage(engine, t_rec, 100, rerank=False), truth)}
            for c in args.candidates:
                rec[str(c)] = recall_at(two_stage(engine, t_rec, c), truth)
            row["recall"][kind] = rec
            log(
                f"  recall@10 [{kind}] vs reference: first stage only {rec['first_stage_only']:.3f}; "
                + ", ".join(f"C={c}: {rec[str(c)]:.3f}" for c in args.candidates)
            )

        # Latency at the default C, with the index the size chose (auto).
        if len(kinds) > 1:
            with IndexWriter(index_dir, identity) as w:
                w.publish_ann(force=True, kind="auto")
            index.refresh()
            index.load_model()
            engine = index.engine
        import faiss
        import torch

        from xclip_search.search import DEFAULT_CANDIDATES

        row["latency_ms"] = {}
        for threads in args.threads:
            torch.set_num_threads(threads)
            faiss.omp_set_num_threads(threads)
            lat = latency(engine, t_lat, DEFAULT_CANDIDATES)
            lat_text = latency_with_text(engine, min(args.queries, 100), DEFAULT_CANDIDATES, f"n{n}t{threads}")
            row["latency_ms"][f"threads_{threads}"] = {
                k: {"p50": pct(x, 50) * 1e3, "p99": pct(x, 99) * 1e3}
                for k, x in {**lat, **{f"{k}_with_text": x for k, x in lat_text.items()}}.items()
                if k != "candidates"
            }
            log(
                f"  latency at C={DEFAULT_CANDIDATES}, {threads} thread(s) ({len(t_lat)} queries, text encoding "
                f"excluded; load {load_avg()}):"
            )
            for k in ("total", "first_stage", "rerank", "merge", "cpu"):
                log(f"    {k:12s} {fmt_ms(lat[k])}")
            widened = sum(c > DEFAULT_CANDIDATES for c in lat["candidates"])
            log(f"    ({widened} of {len(t_lat)} queries widened the pool to find 10 distinct videos)")
            warm = latency(engine, t_lat, DEFAULT_CANDIDATES)
            row["latency_ms"][f"threads_{threads}"]["total_warm"] = {
                "p50": pct(warm["total"], 50) * 1e3,
                "p99": pct(warm["total"], 99) * 1e3,
            }
            log(
                f"    the same queries again (their Z now in the page cache): total {fmt_ms(warm['total'])}; "
                f"rerank {fmt_ms(warm['rerank'])}"
            )
            log(
                f"    with text encoding (distinct strings, base text tower): total {fmt_ms(lat_text['total'])}; "
                f"encoding alone {fmt_ms(lat_text['encode'])}"
            )
            base = pct(lat_text["encode_transformers"], 50)
            log(
                f"    text encoding vs transformers' get_text_features on the same strings (interleaved): "
                f"{fmt_ms(lat_text['encode_transformers'])} -> ratio {pct(lat_text['encode'], 50) / base:.2f} (p50)"
            )
            if args.row_checks:
                costs = [row_check_cost(engine, t_lat, DEFAULT_CANDIDATES) for _ in range(args.repeats)]
                row["latency_ms"][f"threads_{threads}"]["row_checks"] = costs
                for r, cost in enumerate(costs):
                    log(
                        f"    row hashes checked / not (interleaved, {len(t_lat)} queries each, run {r + 1}): p50 "
                        f"{cost['p50_on_ms']:.2f} / {cost['p50_off_ms']:.2f} ms -> ratio {cost['ratio_p50']:.3f}; "
                        f"mean {cost['mean_on_ms']:.2f} / {cost['mean_off_ms']:.2f} ms -> ratio "
                        f"{cost['ratio_mean']:.3f}; CPU time ratio {cost['cpu_ratio_mean']:.3f} (load {load_avg()})"
                    )
                for key in ("ratio_p50", "ratio_mean", "cpu_ratio_mean"):
                    xs = [c[key] for c in costs]
                    log(f"    {key}: {min(xs):.3f} to {max(xs):.3f} over {len(xs)} runs (target <= 1.05)")
        torch.set_num_threads(args.bulk_threads)
        faiss.omp_set_num_threads(os.cpu_count() or 1)

        disk = dir_bytes(index_dir)
        row["disk_bytes_per_segment"] = {k: v / n for k, v in disk.items()}
        log(
            "  disk per segment: "
            + ", ".join(f"{k} {v / n:,.0f} B" for k, v in disk.items())
            + f"; total {sum(disk.values()) / 2**30:.2f} GiB"
        )
        mem = memory_probe(index_dir, t_lat[:20])
        row["memory_mb"] = mem
        log(
            f"  memory (fresh process): {(mem['opened'] - mem['start']) * 2**20 / n:,.0f} B per segment to open "
            f"the index (ANN estimate {info['ann']['memory_bytes'] / n:,.1f} B; ids {mem['ids_bytes'] / n:.0f} B), "
            f"model {mem['model'] - mem['opened']:.0f} MB, +{mem['queried'] - mem['model']:.0f} MB after 20 "
            f"queries; v and Z stay memory-mapped ({mem['mapped']:.0f} MB of file pages mapped after the queries)"
        )
        if args.throughput and "throughput" not in results:
            ids = snap.live_ids()[: args.throughput_pairs]
            v, z = snap.vectors.gather(ids)
            results["throughput"] = {}
            results["matmul_gflops"] = {}

            flops = engine.scorer.flops_per_pair(z.shape[1])
            for threads in args.threads:
                peak = matmul_peak(threads)
                torch.set_num_threads(threads)
                tp = rerank_throughput(index.checkpoint.model, engine.scorer, v, z, t_lat[0])
                tp_c = rerank_throughput(
                    index.checkpoint.model, engine.scorer, v[:DEFAULT_CANDIDATES], z[:DEFAULT_CANDIDATES], t_lat[0]
                )
                tp["gflops"] = tp["shortcut_pairs_per_s"] * flops / 1e9
                tp["gflops_at_default_c"] = tp_c["shortcut_pairs_per_s"] * flops / 1e9
                tp["matmul_peak_gflops"] = peak["peak"]
                results["matmul_gflops"][f"threads_{threads}"] = peak
                results["throughput"][f"threads_{threads}"] = tp
                log(
                    f"  rerank throughput on {len(ids)} pairs, {threads} thread(s): shortcut "
                    f"{tp['shortcut_pairs_per_s']:,.0f} pairs/s, transformers {tp['transformers_pairs_per_s']:,.0f} "
                    f"pairs/s -> {tp['speedup']:.1f}x (max score difference {tp['max_abs_diff']:.1e})"
                )
                log(
                    f"    {flops / 1e6:.1f} MFLOP a pair: {tp['gflops']:.1f} GFLOP/s on {len(ids)} pairs, "
                    f"{tp['gflops_at_default_c']:.1f} GFLOP/s on {DEFAULT_CANDIDATES} (a query's rerank), against a "
                    f"measured float32 matmul peak of {peak['peak']:.1f} GFLOP/s "
                    f"({tp['gflops_at_default_c'] / peak['peak']:.0%}; square 1024: {peak['square_1024']:.1f}, "
                    f"100x512x2048: {peak['rerank_mlp_100x512x2048']:.1f})"
                )
            torch.set_num_threads(args.bulk_threads)
            fe = float16_error(engine.scorer, synth, t_rec)
            results["float16_z"] = fe
            log(
                f"  Z as float16 vs float32: max score error {fe['max_abs']:.1e}, mean {fe['mean_abs']:.1e}, "
                f"top-10 overlap {fe['top10_overlap']:.3f}"
            )
    results["sizes"].append(row)
    if not args.keep:
        shutil.rmtree(index_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--workdir", type=Path, default=None, help="Where the indexes go (deleted afterwards).")
    parser.add_argument("--queries", type=int, default=200, help="Queries timed per size.")
    parser.add_argument("--exhaustive-queries", type=int, default=20)
    parser.add_argument("--exhaustive-max", type=int, default=100_000, help="Largest size scored exhaustively.")
    parser.add_argument("--candidates", default="25,50,100,200,400")
    parser.add_argument("--z-dtype-small", default="float32", choices=["float32", "float16"])
    parser.add_argument("--z-dtype-large", default="float16", choices=["float32", "float16"])
    parser.add_argument("--prompt-alpha", type=float, default=1.0)
    parser.add_argument(
        "--prompt-init-std",
        type=float,
        default=0.04,
        help="Std of the prompt generator's weights: how much the rerank reorders (0.04: ~40%% of the top 10).",
    )
    parser.add_argument("--throughput-pairs", type=int, default=512)
    parser.add_argument("--no-throughput", dest="throughput", action="store_false")
    parser.add_argument("--keep", action="store_true", help="Keep the indexes (and reuse kept ones).")
    parser.add_argument("--latency-only", action="store_true", help="Skip the reference scores and recall.")
    parser.add_argument(
        "--bulk-threads",
        type=int,
        default=1,
        help="Torch threads for the exhaustive scoring (1 is faster when other processes load the cores).",
    )
    parser.add_argument(
        "--threads",
        default="1,2",
        help="Torch/FAISS thread counts to time queries with (on a shared machine 1 thread is steadier).",
    )
    parser.add_argument(
        "--row-checks",
        action="store_true",
        help="Also time the queries with the per-row hash checks off, interleaved, and print the ratio.",
    )
    parser.add_argument(
        "--text-tracks",
        action="store_true",
        help="Also add one cue per segment and time fused searches against X-CLIP-only ones (interleaved).",
    )
    parser.add_argument(
        "--text-tracks-only", action="store_true", help="Build, then only the --text-tracks measurement."
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="Runs of the interleaved --row-checks measurement (spread printed)."
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()
    args.text_tracks = args.text_tracks or args.text_tracks_only
    args.candidates = [int(c) for c in args.candidates.split(",")]
    args.threads = [int(c) for c in args.threads.split(",")]
    import torch

    torch.set_num_threads(args.bulk_threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="xq-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log(
        f"bench_query: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {load_avg()}, "
        f"workdir {work}"
    )
    results: dict[str, Any] = {"sizes": [], "args": {k: str(v) for k, v in vars(args).items()}}
    model_dir = work / "model"
    if not (args.keep and (model_dir / "config.json").exists()):
        make_model(model_dir, args.prompt_alpha, args.prompt_init_std)
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            bench_size(args, n, model_dir, work, results)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["load_average_end"] = load_avg()
    results["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    log(f"\nload average at the end {load_avg()} (other processes share these 2 cores; the lead re-measures)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
