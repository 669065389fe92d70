#!/usr/bin/env python
"""Train the bundled demonstration X-CLIP model on generated, captioned clips (CPU, seeded, < 30 minutes).

The model is transformers' own ``XCLIPModel`` (small config, ``num_frames=8``) with the real CLIP BPE
tokenizer, trained the X-CLIP way: the whole ``XCLIPModel.forward`` (vision encoder with cross-frame
communication, MIT, video-specific prompt generator, text encoder) under a symmetric video-text contrastive
loss on the prompted logits. Because captions repeat and short phrasings ("moving left", "red circle") are
true of many clips, the targets are soft: every text in the batch that is true of a clip is a positive for it
(see ``target_weights``).

Inputs are made exactly as the product makes them at index time: DESIGN.md's frame sampling
(``avg=(b-a)/T; idx_i=a+int(avg*i+avg/2)``) over each clip's frames, then the pixel pipeline of the saved
``preprocessor_config.json`` (checked against transformers' PIL image processor before training starts).
To survive H.264, clips are augmented with real H.264 round trips (PyAV) and JPEG (4:2:0) compression.
Circle, square and triangle are the hardest words to learn (colour and motion come first), so a share of each
batch comes in *shape twins*: a clip and the same clip with one shape drawn as another shape word
(``shape_twin``).

Writes a ``save_pretrained`` directory: ``model.safetensors``, ``config.json``, tokenizer files,
``preprocessor_config.json`` and ``training_log.json``.

    python scripts/train_demo_model.py --out xclip_search/assets/demo-model
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from xclip_search.demo.clips import (  # noqa: E402
    COLOURS,
    MOTIONS,
    SHAPES,
    ClipSpec,
    caption_for,
    random_spec,
    render_clip,
    x264_options,
)
from xclip_search.sampling import sample_frame_indices  # noqa: E402

TOKENIZER_DIR = REPO / "xclip_search" / "assets" / "clip-tokenizer"
#: OpenAI CLIP's normalisation, the values every X-CLIP checkpoint ships, so the product's pixel path sees the
#: same constants for the demo model as for real checkpoints.
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
#: Seeds of the small validation set printed during training (distinct from the evaluation script's seeds).
VAL_SEED = 2_000_001

# A text's meaning: one descriptor per shape it mentions, each (colour, shape, motion) with None = unsaid.
Descriptor = tuple[str | None, str | None, str | None]
Meaning = tuple[Descriptor, ...]


# ----------------------------------------------------------------------------------------------- phrasings


def _phrase(rng: np.random.Generator, d: Descriptor) -> str:
    """One shape described by the attributes in ``d``, in one of a few natural wordings."""
    c, s, m = d
    if c and s and m:
        forms = [f"{c} {s} {m}", f"a {c} {s} {m}", f"a {c} {s} that is {m}"]
        p = [0.6, 0.3, 0.1]
    elif c and s:
        forms, p = [f"{c} {s}", f"a {c} {s}"], [0.6, 0.4]
    elif s and m:
        forms, p = [f"{s} {m}", f"a {s} {m}"], [0.6, 0.4]
    elif c and m:
        forms, p = [f"{c} shape {m}", f"something {c} {m}"], [0.5, 0.5]
    elif m:
        forms, p = [m, f"something {m}", f"a shape {m}"], [0.7, 0.15, 0.15]
    elif c:
        forms, p = [c, f"something {c}", f"{c} shape"], [0.6, 0.2, 0.2]
    elif s:
        forms, p = [s, f"a {s}"], [0.6, 0.4]
    else:
        raise ValueError("empty descriptor")
    return str(rng.choice(forms, p=p))


def full_text(rng: np.random.Generator, spec: ClipSpec, canonical_prob: float) -> tuple[str, Meaning]:
    """A text naming every shape with all three attributes; mostly the canonical caption (the eval's
    query)."""
    meaning = tuple((s.colour, s.shape, s.motion) for s in spec.shapes)
    if rng.random() < canonical_prob:
        return caption_for(spec), meaning
    order = list(rng.permutation(len(meaning)))
    return " and ".join(_phrase(rng, meaning[i]) for i in order), meaning


#: Which attributes a partial phrasing keeps (colour, shape, motion) and how often.
_SUBSETS: list[tuple[bool, bool, bool]] = [
    (False, False, True),
    (True, True, False),
    (False, True, True),
    (True, False, True),
    (True, False, False),
    (False, True, False),
    (True, True, True),
]
_SUBSET_P = [0.28, 0.2, 0.15, 0.1, 0.1, 0.1, 0.07]


def partial_text(rng: np.random.Generator, spec: ClipSpec) -> tuple[str, Meaning]:
    """A short text about one of the clip's shapes: single labels ("moving left", "red"), pairs ("red circle",
    "circle moving left") and, for two-shape clips, one shape's full phrase. This is what tagging labels and
    short queries look like."""
    shape = spec.shapes[int(rng.integers(len(spec.shapes)))]
    keep_c, keep_s, keep_m = _SUBSETS[int(rng.choice(len(_SUBSETS), p=_SUBSET_P))]
    d: Descriptor = (
        shape.colour if keep_c else None,
        shape.shape if keep_s else None,
        shape.motion if keep_m else None,
    )
    return _phrase(rng, d), (d,)


#: Every single-word label (colours, shapes, motions) is added to every batch when ``--label-texts``: a
#: classification-like signal for each concept on every step (the label texts stay distinct from the start,
#: so the video tower gets a clear target for shape and motion, not only for colour, the easiest cue).
LABELS: list[str] = [*COLOURS, *SHAPES, *MOTIONS]
LABEL_MEANINGS: list[Meaning] = [
    *(((c, None, None),) for c in COLOURS),
    *(((None, s, None),) for s in SHAPES),
    *(((None, None, m),) for m in MOTIONS),
]

_OPPOSITE = {
    "moving left": "moving right",
    "moving right": "moving left",
    "moving up": "moving down",
    "moving down": "moving up",
    "growing": "shrinking",
    "shrinking": "growing",
}


def hard_negative_text(
    rng: np.random.Generator, spec: ClipSpec, shares: tuple[float, float] = (0.6, 0.2)
) -> tuple[str, Meaning]:
    """The clip's full caption with one attribute of one shape changed: mostly the motion (half the time to
    its opposite, "moving left" -> "moving right"), else the shape or the colour. Random batches rarely hold
    two clips that differ in motion alone, so without these the cheapest cue (colour) is all the loss
    teaches; with them, motion and shape words must be read from the video. ``target_weights`` still decides
    truth, so a "negative" that happens to describe another clip in the batch is a positive for that clip."""
    meaning = [(s.colour, s.shape, s.motion) for s in spec.shapes]
    i = int(rng.integers(len(meaning)))
    c, sh, m = meaning[i]
    roll = rng.random()
    if roll < shares[0]:
        flip = m in _OPPOSITE and rng.random() < 0.5
        m = _OPPOSITE[m] if flip else str(rng.choice([x for x in MOTIONS if x != m]))
    elif roll < shares[0] + shares[1]:
        sh = str(rng.choice([x for x in SHAPES if x != sh]))
    else:
        c = str(rng.choice([x for x in COLOURS if x != c]))
    meaning[i] = (c, sh, m)
    return " and ".join(f"{d[0]} {d[1]} {d[2]}" for d in meaning), tuple(meaning)


def shape_twin(rng: np.random.Generator, spec: ClipSpec) -> ClipSpec:
    """The same clip (background, noise, positions, motions) with one shape drawn as another shape word.

    Held-out misses are almost all "blue circle moving down" retrieving a blue square moving down: colour and
    motion are learnt early and then carry the loss, while a random batch seldom holds two clips that differ
    in shape alone. A clip and its twin in one batch can only be told apart by shape, in both directions of
    the loss. Sizes are circumradius-like for every shape word, so the twin's shape covers about as much."""
    i = int(rng.integers(len(spec.shapes)))
    taken = {(s.colour, s.shape) for k, s in enumerate(spec.shapes) if k != i}
    old = spec.shapes[i]
    choices = [x for x in SHAPES if x != old.shape and (old.colour, x) not in taken]
    new = dataclasses.replace(old, shape=str(rng.choice(choices)))
    shapes = tuple(new if k == i else s for k, s in enumerate(spec.shapes))
    return dataclasses.replace(spec, shapes=shapes)


def _matches(d: Descriptor, spec_shape: Any) -> bool:
    c, s, m = d
    return (
        (c is None or c == spec_shape.colour)
        and (s is None or s == spec_shape.shape)
        and (m is None or m == spec_shape.motion)
    )


def target_weights(meanings: Sequence[Meaning], specs: Sequence[ClipSpec], partial_weight: float) -> np.ndarray:
    """``[videos, texts]`` soft-target weights: 1 when the text is true of the clip and mentions as many
    shapes as the clip has, ``partial_weight`` when it is true but leaves a shape out (so "red circle moving
    left" prefers the clip showing only that), 0 when false. A text is true when its descriptors can be
    matched to distinct shapes of the clip."""
    w = np.zeros((len(specs), len(meanings)), dtype=np.float32)
    for i, spec in enumerate(specs):
        for j, meaning in enumerate(meanings):
            if len(meaning) > len(spec.shapes):
                continue
            if len(meaning) == 1:
                ok = any(_matches(meaning[0], s) for s in spec.shapes)
            else:
                a, b = spec.shapes
                ok = (_matches(meaning[0], a) and _matches(meaning[1], b)) or (
                    _matches(meaning[0], b) and _matches(meaning[1], a)
                )
            if ok:
                w[i, j] = 1.0 if len(meaning) == len(spec.shapes) else partial_weight
    return w


# ------------------------------------------------------------------------------------------------- pixels


def preprocess(frames: np.ndarray, size: int) -> np.ndarray:
    """``uint8[T, H, W, 3]`` -> ``float32[T, 3, size, size]`` the way ``preprocessor_config.json`` says:
    shortest edge to ``size`` (PIL bilinear), centre crop, rescale 1/255, normalise. Verified against
    transformers' ``VideoMAEImageProcessorPil`` by ``check_preprocessing``."""
    h, w = frames.shape[1:3]
    if min(h, w) != size:
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(size * long / short)
        new_h, new_w = (size, new_long) if h <= w else (new_long, size)
        frames = np.stack([np.asarray(Image.fromarray(f).resize((new_w, new_h), Image.BILINEAR)) for f in frames])
        h, w = new_h, new_w
    top, left = (h - size) // 2, (w - size) // 2
    frames = frames[:, top : top + size, left : left + size]
    mean = np.array(IMAGE_MEAN, dtype=np.float32)[None, :, None, None]
    std = np.array(IMAGE_STD, dtype=np.float32)[None, :, None, None]
    x = (frames.astype(np.float64) * (1 / 255)).astype(np.float32).transpose(0, 3, 1, 2)
    return np.ascontiguousarray((x - mean) / std)


def jpeg_roundtrip(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-frame JPEG at a random quality with 4:2:0 chroma: cheap stand-in for codec blur and blocking."""
    quality = int(rng.integers(30, 96))
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality, subsampling=2)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return out


def h264_roundtrip(frames: np.ndarray, rng: np.random.Generator, keep: Sequence[int]) -> np.ndarray:
    """Encode all frames with libx264 (random CRF), decode them again with PyAV (which decodes the same
    frames as decord) and return frames ``keep``."""
    import av

    crf = int(rng.integers(18, 34))
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = x264_options(crf)  # byte-identical encodes: without it ~1 clip in 6 differed per run
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    buf.seek(0)
    wanted = set(keep)
    decoded: dict[int, np.ndarray] = {}
    with av.open(buf, mode="r") as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k in wanted:
                decoded[k] = frame.to_ndarray(format="rgb24")
    if len(decoded) != len(wanted):
        raise RuntimeError(f"H.264 round trip lost frames {sorted(wanted - set(decoded))}")
    return np.stack([decoded[k] for k in keep])


# ---------------------------------------------------------------------------------------------------- data


class BatchDataset(torch.utils.data.Dataset):
    """Batch ``step`` is drawn from ``default_rng([seed, step])``: the data do not depend on worker timing, so
    a run is reproducible with any number of loader workers."""

    def __init__(self, args: argparse.Namespace, tokenizer: Any, image_size: int, num_frames: int) -> None:
        self.args = args
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.num_frames = num_frames

    def __len__(self) -> int:
        return int(self.args.steps)

    def clip_pixels(self, rng: np.random.Generator, spec: ClipSpec) -> np.ndarray:
        idx = sample_frame_indices(0, spec.num_frames, self.num_frames)
        roll = rng.random()
        if roll < self.args.h264_prob:
            frames = h264_roundtrip(render_clip(spec), rng, idx)
        elif roll < self.args.h264_prob + self.args.jpeg_prob:
            frames = jpeg_roundtrip(render_clip(spec, idx), rng)
        else:
            frames = render_clip(spec, idx)
        return preprocess(frames, self.image_size)

    def easy_fraction(self, step: int) -> float:
        """Curriculum: the share of easy clips (bigger shapes, plain backgrounds, no noise) at ``step``; all
        easy until ``--easy-until``, then falling linearly to none at ``--easy-end`` (fractions of the run).
        From scratch, a small shape on a busy background is a needle in a haystack: without this start the
        video tower sits on a plateau (embeddings nearly equal, loss at the text-prior level) for most of the
        budget."""
        start, end = self.args.easy_until * self.args.steps, self.args.easy_end * self.args.steps
        if step < start:
            return 1.0
        return float(max(0.0, 1.0 - (step - start) / max(1.0, end - start)))

    def __getitem__(self, step: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.args.seed, step])
        specs, pixels, texts, meanings = [], [], [], []
        easy = self.easy_fraction(step)
        while len(specs) < self.args.batch_size:
            # rendered at the evaluation size (64 px) most of the time, sometimes bigger, then resized like a user's
            # video: the model sees the resampling it will meet whatever its input size
            size = int(rng.choice([64, 80, 96], p=[0.7, 0.15, 0.15]))
            if rng.random() < easy:
                spec = random_spec(
                    rng,
                    size=size,
                    two_shape_prob=self.args.two_shape_prob,
                    size_scale=1.4,
                    backgrounds=("solid",),
                    max_noise=0.0,
                )
            else:
                spec = random_spec(rng, size=size, two_shape_prob=self.args.two_shape_prob)
            specs.append(spec)
            pixels.append(self.clip_pixels(rng, spec))
            if len(specs) < self.args.batch_size and rng.random() < self.args.shape_twins:
                twin = shape_twin(rng, spec)
                specs.append(twin)
                pixels.append(self.clip_pixels(rng, twin))
        for spec in specs:
            text, meaning = full_text(rng, spec, self.args.canonical_prob)
            texts.append(text)
            meanings.append(meaning)
        for spec in specs:
            text, meaning = partial_text(rng, spec)
            texts.append(text)
            meanings.append(meaning)
        for _ in range(self.args.hard_negatives):
            for spec in specs:
                text, meaning = hard_negative_text(rng, spec, (self.args.motion_negatives, self.args.shape_negatives))
                texts.append(text)
                meanings.append(meaning)
        if self.args.label_texts:
            texts.extend(LABELS)
            meanings.extend(LABEL_MEANINGS)
        enc = self.tokenizer(texts, padding=True, return_tensors="pt")
        weights = target_weights(meanings, specs, self.args.partial_weight)
        return {
            "pixel_values": torch.from_numpy(np.stack(pixels)),
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "weights": torch.from_numpy(weights),
        }


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------------- model


def build_config(args: argparse.Namespace) -> Any:
    from transformers import XCLIPConfig

    proj = args.projection_dim
    return XCLIPConfig(
        text_config={
            "hidden_size": args.text_hidden,
            "intermediate_size": args.text_hidden * 4,
            "num_hidden_layers": args.text_layers,
            "num_attention_heads": args.text_heads,
            "max_position_embeddings": 77,
            "hidden_act": args.activation,
        },
        vision_config={
            "hidden_size": args.vision_hidden,
            "intermediate_size": args.vision_hidden * 4,
            "num_hidden_layers": args.vision_layers,
            "num_attention_heads": args.vision_heads,
            "image_size": args.image_size,
            "patch_size": args.patch_size,
            "num_frames": 8,
            "mit_hidden_size": proj,
            "mit_intermediate_size": proj * 4,
            "mit_num_hidden_layers": 1,
            "mit_num_attention_heads": args.prompt_heads,
            "hidden_act": args.activation,
        },
        projection_dim=proj,
        logit_scale_init_value=math.log(args.logit_scale_init),
        prompt_layers=2,
        prompt_num_attention_heads=args.prompt_heads,
    )


def _sincos(positions: torch.Tensor, dim: int, base: float) -> torch.Tensor:
    omega = 1.0 / base ** (torch.arange(dim // 2, dtype=torch.float32) / (dim // 2))
    angles = positions.reshape(-1, 1).float() * omega[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


@torch.no_grad()
def init_from_scratch(model: Any, spatial_scale: float = 1.0, temporal_scale: float = 0.5) -> None:
    """Starting weights for training from scratch (same parameters and architecture; transformers' own init
    assumes a checkpoint will overwrite them). The patch position embeddings start at std 0.02, far below
    the patch tokens' ~0.5, so "where is the shape" (needed for every direction word) starts out invisible;
    the MIT's temporal embedding starts at std 1. Both start as sin-cos tables instead (2-D over the patch
    grid, 1-D over frames)."""
    pe = model.vision_model.embeddings.position_embedding.weight
    n, d = pe.shape
    grid = round(math.sqrt(n - 1))
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    pe[0].zero_()
    pe[1:] = torch.cat([_sincos(ys, d // 2, 100.0), _sincos(xs, d // 2, 100.0)], dim=1) * spatial_scale
    mit_pe = model.mit.position_embedding
    mit_pe[0] = _sincos(torch.arange(mit_pe.shape[1]), mit_pe.shape[2], 10000.0) * temporal_scale
    # The prompt generator's Linear layers get transformers' generic init, std = initializer_factor = 1.0
    # (real checkpoints overwrite it). Its output then dwarfs the text embedding it is added to, and the
    # prompted score is mostly noise from the visual tokens: learning stalls. The original X-CLIP code
    # initialises them trunc_normal(std=0.02) with zero biases; do the same.
    for module in model.prompts_generator.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                module.bias.zero_()


def soft_symmetric_loss(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy of ``[videos, texts]`` logits against soft targets (rows of ``weights``
    normalised for video-to-text, columns for text-to-video). With one-hot weights this is exactly the loss
    ``XCLIPModel.forward(return_loss=True)`` computes. Texts true of no clip in the batch (hard negatives)
    take part only as negatives: they have no text-to-video term."""
    v2t_target = weights / weights.sum(dim=1, keepdim=True)
    v2t = -(v2t_target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    col_sum = weights.sum(dim=0)
    has_positive = col_sum > 0
    t2v_target = weights[:, has_positive] / col_sum[has_positive]
    t2v = -(t2v_target * torch.log_softmax(logits[:, has_positive], dim=0)).sum(dim=0).mean()
    return (v2t + t2v) / 2


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only (not biases, norms, embeddings, scale, alpha, positions)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.ndim < 2 or "embedding" in name or "norm" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def label_accuracies(demo: Any, encoded: Any) -> dict[str, float]:
    """Zero-shot accuracy of single-word labels (colours, shapes, motions) on the one-shape validation clips:
    shows which concepts the model has learned so far."""
    from xclip_search.demo import evaluation as ev

    one = [i for i, c in enumerate(encoded.clips) if len(c.spec.shapes) == 1]
    features = ev.VideoFeatures(v=encoded.features.v[one], z=encoded.features.z[one])
    out = {}
    for name, labels in (("colour", list(COLOURS)), ("shape", list(SHAPES)), ("motion", list(MOTIONS))):
        scores = ev.prompted_scores(demo, features, ev.text_features(demo, labels))
        truth = [labels.index(getattr(encoded.clips[i].spec.shapes[0], name)) for i in one]
        out[f"acc_{name}"] = round(float(np.mean(np.array(truth) == scores.argmax(dim=-1).numpy())), 3)
    return out


def check_preprocessing(processor: Any, size: int) -> float:
    """Max abs difference between this script's pixels and the saved image processor's, on clips of every
    training size; training refuses to start unless they agree."""
    rng = np.random.default_rng(123)
    worst = 0.0
    for clip_size in (64, 80, 96):
        spec = random_spec(rng, size=clip_size)
        frames = render_clip(spec, sample_frame_indices(0, spec.num_frames, 8))
        ours = preprocess(frames, size)
        ref = np.asarray(processor([list(frames)], return_tensors="np")["pixel_values"][0])
        worst = max(worst, float(np.abs(ours - ref).max()))
    if worst > 1e-5:
        raise SystemExit(f"training pixels differ from the image processor's by {worst}")
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "xclip_search" / "assets" / "demo-model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1700)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--min-lr-ratio", type=float, default=0.02)
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="data loader processes (0: in the main process)")
    parser.add_argument("--image-size", type=int, default=72)
    parser.add_argument("--patch-size", type=int, default=12)
    parser.add_argument("--vision-hidden", type=int, default=64)
    parser.add_argument("--vision-layers", type=int, default=4)
    parser.add_argument("--vision-heads", type=int, default=4)
    parser.add_argument("--text-hidden", type=int, default=64)
    parser.add_argument("--text-layers", type=int, default=3)
    parser.add_argument("--text-heads", type=int, default=4)
    parser.add_argument("--projection-dim", type=int, default=64)
    parser.add_argument("--prompt-heads", type=int, default=4)
    parser.add_argument(
        "--logit-scale-init",
        type=float,
        default=1 / 0.07,
        help="starting exp(logit_scale), the inverse temperature (CLIP's 1/0.07 by default); learnt from there",
    )
    parser.add_argument(
        "--activation",
        default="gelu",
        help="MLP activation of the text and vision towers: 'gelu' is one fused op, CLIP's 'quick_gelu' three",
    )
    parser.add_argument(
        "--attention",
        default="eager",
        help="attention implementation while training: with ~40 tokens and 16-dim heads, torch's CPU"
        " flash-attention kernel is slower than plain matmul-softmax-matmul. With eager and gelu a model step"
        " alone takes 0.58 s instead of 0.69 s; the whole loop's rate is set by the data worker sharing the 2"
        " cores and stays about 1.05 steps/s",
    )
    parser.add_argument("--two-shape-prob", type=float, default=0.25)
    parser.add_argument("--canonical-prob", type=float, default=0.75)
    parser.add_argument("--partial-weight", type=float, default=0.3)
    parser.add_argument("--hard-negatives", type=int, default=1, help="hard-negative captions per clip")
    parser.add_argument("--motion-negatives", type=float, default=0.35, help="share of hard negatives changing motion")
    parser.add_argument("--shape-negatives", type=float, default=0.5, help="share changing the shape (rest: colour)")
    parser.add_argument(
        "--shape-twins", type=float, default=0.3, help="chance that a clip comes with its shape twin (shape_twin)"
    )
    parser.add_argument("--label-texts", type=int, default=1, help="add the 15 one-word labels to each batch")
    parser.add_argument("--h264-prob", type=float, default=0.05)
    parser.add_argument("--jpeg-prob", type=float, default=0.5)
    parser.add_argument("--easy-until", type=float, default=0.1, help="all clips easy until this fraction")
    parser.add_argument("--easy-end", type=float, default=0.4, help="no easy clips from this fraction on")
    parser.add_argument("--sincos-init", type=int, default=1, help="sin-cos position embeddings at start")
    parser.add_argument(
        "--stop-after",
        type=int,
        default=0,
        help="stop and save after this many steps of the --steps schedule (reproduces a run that was cut)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=40.0,
        help="safety stop (saves what it has); the step count sets the LR schedule, so a stopped run is not the"
        " reproducible one",
    )
    parser.add_argument("--eval-every", type=int, default=850)
    parser.add_argument("--val-clips", type=int, default=100)
    args = parser.parse_args(argv)

    from transformers import AutoModel, CLIPTokenizer
    from transformers.models.videomae.image_processing_pil_videomae import VideoMAEImageProcessorPil

    from xclip_search.demo import evaluation as ev

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)  # nothing here uses the global numpy RNG; set anyway for third-party code
    started = time.perf_counter()

    tokenizer = CLIPTokenizer(str(TOKENIZER_DIR / "vocab.json"), str(TOKENIZER_DIR / "merges.txt"), model_max_length=77)
    size = args.image_size
    processor = VideoMAEImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": size},
        resample=2,
        do_center_crop=True,
        crop_size={"height": size, "width": size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
    )
    pixel_diff = check_preprocessing(processor, size)

    config = build_config(args)
    model = AutoModel.from_config(config, attn_implementation=args.attention)  # an XCLIPModel
    if args.sincos_init:
        init_from_scratch(model)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"XCLIPModel: {n_params / 1e6:.2f}M parameters; pixel check max diff {pixel_diff:.2e}", flush=True)

    optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.98), eps=1e-6)

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    dataset = BatchDataset(args, tokenizer, size, config.vision_config.num_frames)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=args.workers,
        worker_init_fn=_worker_init if args.workers else None,
        prefetch_factor=4 if args.workers else None,
    )
    demo = ev.DemoModel(model=model, tokenizer=tokenizer, processor=processor)
    val_clips = ev.retrieval_clips(args.val_clips, seed=VAL_SEED)
    history: list[dict[str, Any]] = []
    log_loss = 0.0
    step = 0
    stopped_early = False
    for step, batch in enumerate(loader):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"],
        )
        loss = soft_symmetric_loss(out.logits_per_video, batch["weights"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        log_loss += loss.item()
        elapsed = time.perf_counter() - started
        if (step + 1) % 25 == 0:
            print(
                f"step {step + 1}/{args.steps} loss {log_loss / 25:.4f} lr {lr_at(step):.2e} "
                f"scale {model.logit_scale.exp().item():.1f} {elapsed / 60:.1f} min {(step + 1) / elapsed:.2f} steps/s",
                flush=True,
            )
            log_loss = 0.0
        last = step + 1 == (args.stop_after or args.steps)
        if args.eval_every and ((step + 1) % args.eval_every == 0 or last):
            model.eval()
            encoded = ev.encode_clips(demo, val_clips)
            texts = ev.captions_of(val_clips)
            recall = ev.recall_at(ev.prompted_scores(demo, encoded.features, ev.text_features(demo, texts)), texts)
            attribute_accuracy = label_accuracies(demo, encoded)
            model.train()
            row = {
                "step": step + 1,
                "loss": loss.item(),
                "minutes": round(elapsed / 60, 2),
                **recall,
                **attribute_accuracy,
            }
            history.append(row)
            print(f"  val {json.dumps(row)}", flush=True)
        if elapsed > args.max_minutes * 60 and not last:
            print(f"stopping at step {step + 1}: past --max-minutes {args.max_minutes}", flush=True)
            stopped_early = True
            break
        if last:
            break
    train_seconds = time.perf_counter() - started

    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    info = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "steps_done": step + 1,
        "stopped_early": stopped_early,
        "stop_after": args.stop_after,
        "train_seconds": round(train_seconds, 1),
        "steps_per_second": round((step + 1) / train_seconds, 3),
        "torch_threads": torch.get_num_threads(),
        "parameters": n_params,
        "validation": history,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "numpy": np.__version__,
        },
        "machine": platform.processor() or platform.machine(),
    }
    (args.out / "training_log.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    print(f"saved to {args.out} after {train_seconds / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
