#!/usr/bin/env python
"""Measure concepts (labels learned from a few examples) on the demo model, and the alternatives to the method.

    python scripts/eval_concepts.py [--trials 10] [--alternatives] [--only TEXT] [--cache /tmp/concepts.npz] [--json]

Every clip goes through a real file (H.264 mp4, decord, the saved image processor), as in
scripts/eval_demo_model.py. Three held-out sets:

  * invented concepts: six made-up words, each standing for one colour + shape + motion (pairs differ in one
    attribute only); for k = 1, 2, 4, 8 examples a concept is learned per word (negatives: a sample of the
    "index", i.e. random clips plus the other concepts' example pools, as `learn` does), then held-out clips are
    tagged with the six words: accuracy of the top label, against zero-shot X-CLIP on the same words;
  * confusable two-shape captions: groups of four captions that swap motions or colours between two shapes
    (X-CLIP's binding problem); zero-shot tagging within a group against concepts named by the captions (their
    prompted score is then an input), overall and on the clips zero-shot already gets right;
  * calibration: each concept's probability on balanced held-out positives and negatives (ECE, reliability).

Alternatives measured on the same draws: a prototype (cosine to the positives' mean minus the negatives',
Platt-scaled on the training scores), a Tip-Adapter-style cache (affinity exp(-beta (1 - cos)) to the
positives minus to the negatives, plus the zero-shot logit, Platt-scaled), logistic regression on v alone,
and the chosen one (logistic regression on v with the prompted score as a feature, xclip_search.concepts).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xclip_search import concepts as cc
from xclip_search.demo import evaluation as ev
from xclip_search.demo.clips import caption_for, compose_spec, make_clip, render_clip

SEED = 1_000_017
INVENTED: dict[str, tuple[str, str, str]] = {
    "blicket": ("red", "circle", "moving left"),
    "dax": ("red", "circle", "moving right"),
    "wug": ("blue", "circle", "moving left"),
    "toma": ("red", "square", "moving up"),
    "fep": ("green", "triangle", "growing"),
    "zorp": ("yellow", "square", "blinking"),
}
#: A seventh word differing from "blicket" in shape alone (circle vs square): the demo model's v barely tells
#: them apart (its zero-shot first-stage cosine gets 0.72 on the real captions); measured on its own.
HARD_PAIR = ("kiki", ("red", "square", "moving left"))


def _swaps(a: tuple[str, str, str], b: tuple[str, str, str]) -> list[list[tuple[str, str, str]]]:
    """Four two-shape scenes: as given, motions swapped, colours swapped, both swapped."""
    (ca, sa, ma), (cb, sb, mb) = a, b
    return [
        [(ca, sa, ma), (cb, sb, mb)],
        [(ca, sa, mb), (cb, sb, ma)],
        [(cb, sa, ma), (ca, sb, mb)],
        [(cb, sa, mb), (ca, sb, ma)],
    ]


GROUPS = [
    _swaps(("red", "circle", "moving left"), ("blue", "square", "moving right")),
    _swaps(("green", "triangle", "growing"), ("yellow", "circle", "shrinking")),
    _swaps(("white", "square", "moving up"), ("red", "triangle", "blinking")),
]


def build_sets(train: int, test: int, background: int, cache: Path | None) -> dict[str, np.ndarray]:
    """v, z and labels of every clip (encoded once; `cache` keeps them between runs)."""
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    rng = np.random.default_rng(SEED)
    specs, kind, label, split = [], [], [], []
    for i, phrase in enumerate([*INVENTED.values(), HARD_PAIR[1]]):
        for j in range(train + test):
            specs.append(compose_spec(rng, [phrase]))
            kind.append(0)
            label.append(i)
            split.append(0 if j < train else 1)
    captions: list[str] = []
    for group in GROUPS:
        for scene in group:
            captions.append(caption_for(compose_spec(rng, scene)))
            for j in range(train + test):
                specs.append(compose_spec(rng, scene))
                kind.append(1)
                label.append(len(captions) - 1)
                split.append(0 if j < train else 1)
    for j in range(background):
        specs.append(make_clip(rng).spec)
        kind.append(2)
        label.append(-1)
        split.append(0 if j < background // 2 else 1)
    demo = ev.load_demo_model()
    from xclip_search.demo.clips import Clip

    clips = [Clip(frames=render_clip(s), caption=caption_for(s), spec=s) for s in specs]
    enc = ev.encode_clips(demo, clips)
    names = [*INVENTED, HARD_PAIR[0], *captions]
    scores = ev.prompted_scores(demo, enc.features, ev.text_features(demo, names)).numpy()
    out = {
        "v": enc.features.v.numpy(),
        # Z as the index stores it (after the prompt generator's layernorm), float16 as a compact cache
        "z": demo.model.prompts_generator.layernorm(enc.features.z).detach().numpy().astype(np.float16),
        "kind": np.array(kind),
        "label": np.array(label),
        "split": np.array(split),
        "names": np.array(names),
        "scores": scores,  # prompted score of every name / caption for every clip
        "logit_scale": np.array(float(demo.model.logit_scale.detach().exp())),
    }
    if cache is not None:
        np.savez(cache, **out)
    return out


# ------------------------------------------------------------------------------------------ the methods

Fitter = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.ndarray, float], Callable[[np.ndarray, np.ndarray], np.ndarray]
]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _platt(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """Platt scaling fitted on (training) scores, classes weighted equally, a mild prior on the slope."""
    x = np.concatenate([pos, neg])[:, None]
    feats = np.concatenate([x, np.ones_like(x)], axis=1)
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    c = np.concatenate([np.full(len(pos), 0.5 / len(pos)), np.full(len(neg), 0.5 / len(neg))])
    w = cc._newton(feats, y, c, np.array([1e-3, 1e-8]), np.zeros(2))
    return float(w[0]), float(w[1])


def prototype(pv: np.ndarray, nv: np.ndarray, ps: np.ndarray, ns: np.ndarray, scale: float):
    mp, mn = _unit(pv).mean(0), _unit(nv).mean(0)

    def raw(v: np.ndarray, s: np.ndarray) -> np.ndarray:
        u = _unit(v)
        return u @ mp - u @ mn

    a, b = _platt(raw(pv, ps), raw(nv, ns))
    return lambda v, s: cc._sigmoid(a * raw(v, s) + b)


def tip_adapter(pv: np.ndarray, nv: np.ndarray, ps: np.ndarray, ns: np.ndarray, scale: float, beta: float = 5.0):
    kp, kn = _unit(pv), _unit(nv)
    s_ref = float(np.mean(ns))

    def raw(v: np.ndarray, s: np.ndarray) -> np.ndarray:
        u = _unit(v)
        cache = np.exp(-beta * (1 - u @ kp.T)).mean(1) - np.exp(-beta * (1 - u @ kn.T)).mean(1)
        return 10.0 * cache + scale * (s - s_ref) * 0.1

    a, b = _platt(raw(pv, ps), raw(nv, ns))
    return lambda v, s: cc._sigmoid(a * raw(v, s) + b)


def logistic_v(pv: np.ndarray, nv: np.ndarray, ps: np.ndarray, ns: np.ndarray, scale: float):
    model = cc.fit_concept(pv, nv, logit_scale=scale, held_out=False).model
    return lambda v, s: model.probs(v)


def own_probability(pv: np.ndarray, nv: np.ndarray, ps: np.ndarray, ns: np.ndarray, scale: float, **kw: float):
    """The learned concept's own probability (against random segments) decides among labels too."""
    model = cc.fit_concept(pv, nv, logit_scale=scale, text="name", pos_s=ps, neg_s=ns, held_out=False, **kw).model
    return lambda v, s: model.probs(v, s)


def with_zero_shot(correction: float = cc.TAG_CORRECTION, **kw: float) -> Fitter:
    """The same fit; among labels, tagged as `tag` does (`concepts.tag_probs`): a concept whose text X-CLIP knows
    is X-CLIP's zero-shot logit plus `correction` times its learned term, one X-CLIP does not know its own
    probability. `kw` changes the fit (l2_v, l2_text: 1e8 fixes the text weight at 1, a residual fit)."""

    def fit(pv: np.ndarray, nv: np.ndarray, ps: np.ndarray, ns: np.ndarray, scale: float):
        model = cc.fit_concept(pv, nv, logit_scale=scale, text="name", pos_s=ps, neg_s=ns, held_out=False, **kw).model
        scorer = _Tagged(model, correction)
        return scorer

    return fit


class _Tagged:
    """A concept's own probability when called (calibration), and its model for `tag` among labels."""

    def __init__(self, model: cc.ConceptModel, correction: float) -> None:
        self.model, self.correction = model, correction

    def __call__(self, v: np.ndarray, s: np.ndarray) -> np.ndarray:
        return self.model.probs(v, s if self.model.uses_text else None)


def tag(models: list, v: np.ndarray, s: np.ndarray, scale: float) -> np.ndarray:
    """Which label `tag` puts first for each clip: `concepts.tag_probs` for the chosen method (and its variants),
    the highest own probability for the others."""
    if all(isinstance(m, _Tagged) for m in models):
        probs = cc.tag_probs(
            s, [m.model for m in models], v, [None] * len(models), scale, correction=models[0].correction
        )
    else:
        probs = np.stack([m(v, s[:, j]) for j, m in enumerate(models)], axis=1)
    return probs.argmax(1)


METHODS: dict[str, Fitter] = {
    "prototype": prototype,
    "tip-adapter": tip_adapter,
    "logistic on v": logistic_v,
    "logistic on v + text, own probability (before)": own_probability,
    "logistic on v + text, + zero-shot in tag (chosen)": with_zero_shot(),
}
#: The other ways tried of combining the learned concept with zero-shot (``--alternatives``).
ALTERNATIVES: dict[str, Fitter] = {
    "own probability, text prior x100 (l2_text 5)": lambda *a: own_probability(*a, l2_text=5.0),
    "own probability, residual fit (text weight 1, l2_v 0.1)": lambda *a: own_probability(*a, l2_text=1e8, l2_v=0.1),
    "zero-shot + 0.01 x learned term": with_zero_shot(0.01),
    "zero-shot + 0.03 x learned term": with_zero_shot(0.03),
    "zero-shot + 0.1 x learned term": with_zero_shot(0.1),
    "zero-shot + residual fit, l2_v 0.3": with_zero_shot(1.0, l2_text=1e8, l2_v=0.3),
    "zero-shot + residual fit, l2_v 1": with_zero_shot(1.0, l2_text=1e8, l2_v=1.0),
}


# ------------------------------------------------------------------------------------------ experiments


def run(
    data: dict[str, np.ndarray], ks: list[int], trials: int, methods: dict[str, Fitter], negatives: int
) -> dict[str, object]:
    v, kind, label, split, scores = data["v"], data["kind"], data["label"], data["split"], data["scores"]
    scale = float(data["logit_scale"])
    names = [str(x) for x in data["names"]]
    n_inv = len(INVENTED)
    label = np.where(kind == 1, label + n_inv + 1, label)  # two-shape clips: their caption's column in `scores`
    index_pool = np.flatnonzero(split == 0)  # the "index": every training-pool clip, of every kind
    held_bg = np.flatnonzero((kind == 2) & (split == 1))
    rng = np.random.default_rng(7)  # reseeded before each method of each set: every method gets the same draws
    result: dict[str, object] = {}

    def learn(fit: Fitter, name_col: int, pool: np.ndarray, k: int):
        pos = rng.choice(pool, size=k, replace=False)
        cand = np.setdiff1d(index_pool, pos)
        neg = rng.choice(cand, size=min(negatives, len(cand)), replace=False)
        return fit(v[pos], v[neg], scores[pos, name_col], scores[neg, name_col], scale)

    # --- invented words
    test = np.flatnonzero((kind == 0) & (split == 1) & (label < n_inv))
    truth = label[test]
    zs = scores[test][:, :n_inv].argmax(1)
    inv: dict[str, object] = {"zero_shot_accuracy": float(np.mean(zs == truth)), "chance": 1.0 / n_inv}
    for mname, fit in methods.items():
        rng = np.random.default_rng(7)
        rows = {}
        for k in ks:
            accs, probs_all, truth_all = [], [], []
            for _ in range(trials):
                models = [
                    learn(fit, c, np.flatnonzero((kind == 0) & (label == c) & (split == 0)), k) for c in range(n_inv)
                ]
                accs.append(float(np.mean(tag(models, v[test], scores[test, :n_inv], scale) == truth)))
                # calibration: each concept on its held-out positives and as many held-out negatives
                for c, m in enumerate(models):
                    pos = test[truth == c]
                    negs = np.concatenate([test[truth != c], held_bg])
                    negs = rng.choice(negs, size=len(pos), replace=False)
                    both = np.concatenate([pos, negs])
                    probs_all.append(m(v[both], scores[both, c]))
                    truth_all.append(np.concatenate([np.ones(len(pos)), np.zeros(len(negs))]))
            cal = cc.calibration(np.concatenate(probs_all), np.concatenate(truth_all))
            rows[str(k)] = {
                "accuracy": float(np.mean(accs)),
                "accuracy_min": float(np.min(accs)),
                "ece": cal["ece"],
                "reliability": cal["reliability"],
            }
        inv[mname] = rows
    # the shape-only pair, tagged with its two words
    pair = np.flatnonzero((kind == 0) & (split == 1) & np.isin(label, [0, n_inv]))
    pair_truth = (label[pair] == n_inv).astype(int)
    hard: dict[str, object] = {
        "zero_shot_accuracy": float(np.mean(scores[pair][:, [0, n_inv]].argmax(1) == pair_truth))
    }
    for mname, fit in methods.items():
        rng = np.random.default_rng(8)
        hard[mname] = {}
        for k in ks:
            accs = []
            for _ in range(trials):
                models = [
                    learn(fit, c, np.flatnonzero((kind == 0) & (label == c) & (split == 0)), k) for c in (0, n_inv)
                ]
                picked = tag(models, v[pair], scores[pair][:, [0, n_inv]], scale)
                accs.append(float(np.mean(picked == pair_truth)))
            hard[mname][str(k)] = float(np.mean(accs))  # type: ignore[index]
    inv["shape_only_pair"] = hard
    result["invented"] = inv

    # --- confusable two-shape captions (groups of four)
    two: dict[str, object] = {}
    per_group = 4
    zs_right_all = []
    tests = []
    for g in range(len(GROUPS)):
        cols = [n_inv + 1 + g * per_group + j for j in range(per_group)]
        t = np.flatnonzero((kind == 1) & (split == 1) & np.isin(label, cols))
        right = scores[t][:, cols].argmax(1) == (label[t] - cols[0])
        tests.append((cols, t, right))
        zs_right_all.append(right)
    zs_right = np.concatenate(zs_right_all)
    two["zero_shot_accuracy"] = float(np.mean(zs_right))
    two["captions"] = [names[c] for cols, _, _ in tests for c in cols]
    for mname, fit in methods.items():
        rng = np.random.default_rng(9)
        rows = {}
        for k in ks:
            acc, kept, fixed = [], [], []
            for _ in range(trials):
                ok_all = []
                for cols, t, _right in tests:
                    models = [learn(fit, c, np.flatnonzero((kind == 1) & (label == c) & (split == 0)), k) for c in cols]
                    ok_all.append(tag(models, v[t], scores[t][:, cols], scale) == (label[t] - cols[0]))
                ok = np.concatenate(ok_all)
                acc.append(float(np.mean(ok)))
                kept.append(float(np.mean(ok[zs_right])))
                fixed.append(float(np.mean(ok[~zs_right])) if np.any(~zs_right) else 1.0)
            rows[str(k)] = {
                "accuracy": float(np.mean(acc)),
                "on_zero_shot_right": float(np.mean(kept)),
                "on_zero_shot_wrong": float(np.mean(fixed)),
            }
        two[mname] = rows
    result["two_shape"] = two
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--train", type=int, default=16, help="example pool per concept")
    parser.add_argument("--test", type=int, default=25, help="held-out clips per concept")
    parser.add_argument("--background", type=int, default=300, help="random clips (half in the index)")
    parser.add_argument("--negatives", type=int, default=cc.DEFAULT_NEGATIVES)
    parser.add_argument("--cache", type=Path, default=None, help="npz to keep the encoded clips in")
    parser.add_argument("--only-chosen", action="store_true", help="measure the chosen method only")
    parser.add_argument("--alternatives", action="store_true", help="also the other ways of using zero-shot tried")
    parser.add_argument("--only", default="", help="measure only the methods whose name contains this")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()
    data = build_sets(args.train, args.test, args.background, args.cache)
    methods = {**METHODS, **(ALTERNATIVES if args.alternatives else {})}
    methods = {k: m for k, m in methods.items() if (not args.only_chosen or "chosen" in k) and args.only in k}
    result = run(data, [1, 2, 4, 8], args.trials, methods, args.negatives)
    result["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    inv = result["invented"]
    assert isinstance(inv, dict)
    print(
        f"Invented words (6 concepts, accuracy and ECE; zero-shot {inv['zero_shot_accuracy']:.3f}, "
        f"chance {inv['chance']:.3f})"
    )
    print(f"{'method':56s} " + " ".join(f"k={k:<14d}" for k in (1, 2, 4, 8)))
    for m in methods:
        cells = " ".join(f"{inv[m][str(k)]['accuracy']:.3f} ece {inv[m][str(k)]['ece']:.3f}" for k in (1, 2, 4, 8))
        print(f"{m:56s} {cells}")
    hard = inv["shape_only_pair"]
    print(f"Shape-only pair blicket/kiki (red circle/square moving left; zero-shot {hard['zero_shot_accuracy']:.3f})")
    for m in methods:
        print(f"{m:56s} " + " ".join(f"{hard[m][str(k)]:.3f}{'':12s}" for k in (1, 2, 4, 8)))
    two = result["two_shape"]
    assert isinstance(two, dict)
    print(f"\nConfusable two-shape captions (12 in groups of 4; zero-shot {two['zero_shot_accuracy']:.3f})")
    print(f"{'method':56s} " + " ".join(f"k={k:<20d}" for k in (1, 2, 4, 8)))
    for m in methods:
        cells = " ".join(
            f"{two[m][str(k)]['accuracy']:.3f} (kept {two[m][str(k)]['on_zero_shot_right']:.3f})" for k in (1, 2, 4, 8)
        )
        print(f"{m:56s} {cells}")
    print(f"\n{result['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
