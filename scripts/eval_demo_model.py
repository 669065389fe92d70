#!/usr/bin/env python
"""Measure the demonstration model on held-out generated clips (seeds the training never drew from).

Every clip goes through a real file: written as H.264 mp4, decoded with decord, sampled with DESIGN.md's
formula, preprocessed by the saved ``preprocessor_config.json`` (transformers' PIL image processor), scored.

    python scripts/eval_demo_model.py [--model DIR] [--json]

Figures:
  * text-to-video recall@1/@5 over N clips, each clip's caption as a query; captions repeat across clips, so a
    hit is a retrieved clip whose caption equals the query's (not necessarily the query's own clip);
    with the exact prompted score and with the first-stage cosine alone;
  * motion direction: one shape moving left or right, own caption vs the same caption with the opposite
    direction; also with all 8 frames replaced by one frame (middle, first) to show what a still image gets;
  * zero-shot tagging over the 7 motion labels (softmax of exp(logit_scale) * prompted score).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xclip_search.demo import evaluation as ev


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ev.DEMO_MODEL_DIR)
    parser.add_argument("--retrieval-clips", type=int, default=200)
    parser.add_argument("--direction-clips", type=int, default=200)
    parser.add_argument("--tagging-per-motion", type=int, default=30)
    parser.add_argument("--seed-offset", type=int, default=0, help="added to every held-out seed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    off = args.seed_offset

    demo = ev.load_demo_model(args.model)
    result: dict[str, object] = {"model": str(args.model), "seed_offset": off}

    # --- retrieval
    clips = ev.retrieval_clips(args.retrieval_clips, seed=ev.RETRIEVAL_SEED + off)
    enc = ev.encode_clips(demo, clips)
    captions = ev.captions_of(clips)
    text = ev.text_features(demo, captions)
    prompted = ev.prompted_scores(demo, enc.features, text)
    coarse = ev.coarse_scores(enc.features, text)
    # contract check: our decomposition equals XCLIPModel.forward on the first clips
    ref = ev.forward_scores(demo, enc.pixels[:8], captions[:20])
    forward_diff = float((ref - prompted[:8, :20]).abs().max())
    r_prompted = ev.recall_at(prompted, captions)
    r_coarse = ev.recall_at(coarse, captions)
    two_shape = [len(c.spec.shapes) == 2 for c in clips]
    one_idx = [i for i, t in enumerate(two_shape) if not t]
    two_idx = [i for i, t in enumerate(two_shape) if t]
    order = torch.argsort(prompted.T, dim=1, descending=True)
    misses = [
        {"query": captions[q], "top1": captions[int(order[q, 0])]}
        for q in range(len(captions))
        if captions[int(order[q, 0])] != captions[q]
    ]

    def subset_recall(idx: list[int]) -> float:
        return float(sum(captions[int(order[q, 0])] == captions[q] for q in idx) / max(1, len(idx)))

    result["retrieval"] = {
        "clips": len(clips),
        "distinct_captions": len(set(captions)),
        "two_shape_clips": len(two_idx),
        "hit_rule": "a retrieved clip whose caption equals the query caption",
        "prompted": r_prompted,
        "coarse_cosine_only": r_coarse,
        "prompted_minus_coarse": {k: r_prompted[k] - r_coarse[k] for k in r_prompted},
        "prompted_recall@1_one_shape": subset_recall(one_idx),
        "prompted_recall@1_two_shapes": subset_recall(two_idx),
        "forward_max_abs_diff": forward_diff,
        "misses_at_1": misses,
    }

    # --- direction
    dclips = ev.direction_clips(args.direction_clips, seed=ev.DIRECTION_SEED + off)
    denc = ev.encode_clips(demo, dclips)
    t = demo.num_frames
    result["direction"] = {
        "clips": len(dclips),
        "accuracy": ev.direction_accuracy(demo, denc),
        "single_middle_frame_accuracy": ev.direction_accuracy(
            demo, denc, ev.single_frame_features(demo, denc.pixels, t // 2)
        ),
        "single_first_frame_accuracy": ev.direction_accuracy(
            demo, denc, ev.single_frame_features(demo, denc.pixels, 0)
        ),
    }

    # --- tagging
    tclips = ev.tagging_clips(args.tagging_per_motion, seed=ev.TAGGING_SEED + off)
    tenc = ev.encode_clips(demo, tclips)
    result["tagging"] = {"clips": len(tclips), **ev.tagging(demo, tenc)}
    result["seconds"] = round(time.perf_counter() - started, 1)

    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    r = result["retrieval"]
    d = result["direction"]
    g = result["tagging"]
    assert isinstance(r, dict) and isinstance(d, dict) and isinstance(g, dict)
    print(f"model: {args.model}")
    print(
        f"text-to-video over {r['clips']} held-out clips ({r['distinct_captions']} distinct captions, "
        f"{r['two_shape_clips']} with two shapes)\n"
        "  hit = a retrieved clip whose caption equals the query caption (captions repeat across clips)"
    )
    print(
        f"  prompted (exact X-CLIP): recall@1 {r['prompted']['recall@1']:.3f}  "
        f"recall@5 {r['prompted']['recall@5']:.3f}   [recall@1 one shape "
        f"{r['prompted_recall@1_one_shape']:.3f}, two shapes {r['prompted_recall@1_two_shapes']:.3f}]"
    )
    print(
        f"  first-stage cos(v,t):    recall@1 {r['coarse_cosine_only']['recall@1']:.3f}  "
        f"recall@5 {r['coarse_cosine_only']['recall@5']:.3f}"
    )
    print(
        f"  prompt gain: recall@1 {r['prompted_minus_coarse']['recall@1']:+.3f}  "
        f"recall@5 {r['prompted_minus_coarse']['recall@5']:+.3f}"
    )
    print(f"  decomposition vs XCLIPModel.forward: max abs diff {r['forward_max_abs_diff']:.2e}")
    for m in r["misses_at_1"]:
        print(f"    miss: {m['query']!r} -> top-1 {m['top1']!r}")
    print(f"direction (left/right, {d['clips']} one-shape clips): own caption beats opposite direction")
    print(
        f"  8 frames: {d['accuracy']:.3f}   one middle frame x8: {d['single_middle_frame_accuracy']:.3f}"
        f"   first frame x8: {d['single_first_frame_accuracy']:.3f}"
    )
    print(
        f"zero-shot tagging over 7 motion labels ({g['clips']} one-shape clips): "
        f"accuracy {g['accuracy']:.3f}, "
        f"mean p(true label) {g['mean_prob_true']:.3f}"
    )
    for label, acc in g["per_label"].items():
        print(f"    {label:13s} {acc:.3f}")
    print(f"({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
