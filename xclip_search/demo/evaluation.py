"""Measure the bundled demonstration model on generated clips it never saw.

Everything goes through real files, as the product does: held-out clips are written as H.264 mp4, decoded with
decord, sampled with DESIGN.md's formula, turned into pixels by the saved ``preprocessor_config.json`` (the
transformers PIL image processor), and scored with ``XCLIPModel``'s own modules. The exact prompted score is
checked against ``XCLIPModel.forward(...).logits_per_video / logit_scale.exp()`` on every run.

Used by ``scripts/eval_demo_model.py`` (full numbers) and ``tests/test_demo_model.py`` (regression floors).
This module imports torch; ``xclip_search.demo.clips`` does not.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xclip_search.demo.clips import (
    MOTIONS,
    Clip,
    caption_for,
    make_clip,
    random_spec,
    write_mp4,
)
from xclip_search.sampling import sample_frame_indices

#: Where the committed demonstration model lives.
DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo-model"
#: Frame rate of the evaluation clips (the training clips have no frame rate: frames are frames).
EVAL_FPS = 12.0
#: Base seeds of the held-out sets; training draws from ``default_rng([train_seed, step])`` with small
#: train seeds, so these streams never meet the training data.
RETRIEVAL_SEED = 1_000_001
DIRECTION_SEED = 1_000_002
TAGGING_SEED = 1_000_003


@dataclass
class DemoModel:
    """The model, its tokenizer and its image processor, loaded from one ``save_pretrained`` directory."""

    model: Any
    tokenizer: Any
    processor: Any

    @property
    def num_frames(self) -> int:
        return int(self.model.config.vision_config.num_frames)


def load_demo_model(path: str | Path = DEMO_MODEL_DIR) -> DemoModel:
    """Load model (safetensors only), tokenizer and PIL image processor from ``path``, offline."""
    from transformers import CLIPTokenizer, XCLIPModel
    from transformers.models.videomae.image_processing_pil_videomae import VideoMAEImageProcessorPil

    path = Path(path)
    model = XCLIPModel.from_pretrained(path, use_safetensors=True, local_files_only=True)
    model.eval()
    tokenizer = CLIPTokenizer.from_pretrained(path, local_files_only=True)
    processor = VideoMAEImageProcessorPil.from_pretrained(path, local_files_only=True)
    return DemoModel(model=model, tokenizer=tokenizer, processor=processor)


# ---------------------------------------------------------------------------------------------- video side


def decode_sampled(path: str | Path, num_frames: int) -> np.ndarray:
    """Decode a whole video with decord and return its ``num_frames`` sampled frames
    (``uint8[T, H, W, 3]``)."""
    import decord

    reader = decord.VideoReader(str(path), num_threads=1)
    indices = sample_frame_indices(0, len(reader), num_frames)
    return reader.get_batch(indices).asnumpy()


def pixel_values(demo: DemoModel, videos: Sequence[np.ndarray]) -> torch.Tensor:
    """``float32[B, T, 3, S, S]`` exactly as the saved image processor (PIL backend) makes them."""
    out = demo.processor([list(v) for v in videos], return_tensors="np")["pixel_values"]
    return torch.from_numpy(np.asarray(out, dtype=np.float32))


@dataclass
class VideoFeatures:
    """Per video: ``v`` the MIT-pooled video embedding (unnormalised) and ``z`` the frame-averaged projected
    patch tokens that the prompt generator attends to (before its own layernorm)."""

    v: torch.Tensor
    z: torch.Tensor


@torch.no_grad()
def video_features(demo: DemoModel, pixels: torch.Tensor, batch_size: int = 32) -> VideoFeatures:
    """The video half of ``XCLIPModel.forward``, computed once per video so many texts can be scored."""
    model = demo.model
    vs, zs = [], []
    for start in range(0, len(pixels), batch_size):
        px = pixels[start : start + batch_size]
        b, t, c, h, w = px.shape
        vision = model.vision_model(pixel_values=px.reshape(-1, c, h, w))
        cls = model.visual_projection(vision.pooler_output).view(b, t, -1)
        vs.append(model.mit(cls).pooler_output)
        patches = model.prompts_visual_layernorm(vision.last_hidden_state[:, 1:, :])
        patches = patches @ model.prompts_visual_projection
        zs.append(patches.view(b, t, -1, patches.shape[-1]).mean(dim=1))
    return VideoFeatures(v=torch.cat(vs), z=torch.cat(zs))


@torch.no_grad()
def text_features(demo: DemoModel, texts: Sequence[str]) -> torch.Tensor:
    """Projected text embeddings ``t`` (unnormalised), plain text, no template."""
    enc = demo.tokenizer(list(texts), padding=True, return_tensors="pt")
    return demo.model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output


@torch.no_grad()
def prompted_scores(demo: DemoModel, video: VideoFeatures, text: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """``[B, K]`` exact X-CLIP scores ``cos(v, t + PG(t, Z))``: what ``forward`` gives divided by the
    logit scale."""
    model = demo.model
    v = torch.nn.functional.normalize(video.v, dim=-1)
    rows = []
    for start in range(0, len(v), batch_size):
        z = video.z[start : start + batch_size]
        t = text.unsqueeze(0).expand(len(z), -1, -1)
        t = torch.nn.functional.normalize(t + model.prompts_generator(t, z), dim=-1)
        rows.append(torch.einsum("bd,bkd->bk", v[start : start + batch_size], t))
    return torch.cat(rows)


@torch.no_grad()
def coarse_scores(video: VideoFeatures, text: torch.Tensor) -> torch.Tensor:
    """``[B, K]`` first-stage cosine ``cos(v, t)``: no video-specific prompt."""
    v = torch.nn.functional.normalize(video.v, dim=-1)
    t = torch.nn.functional.normalize(text, dim=-1)
    return v @ t.T


@torch.no_grad()
def forward_scores(demo: DemoModel, pixels: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
    """The reference: ``XCLIPModel.forward(...).logits_per_video / logit_scale.exp()``."""
    enc = demo.tokenizer(list(texts), padding=True, return_tensors="pt")
    out = demo.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pixels)
    return out.logits_per_video / demo.model.logit_scale.exp()


# ------------------------------------------------------------------------------------------ held-out sets


@dataclass
class EncodedSet:
    """Held-out clips after the full file round trip: their clips, pixels and features."""

    clips: list[Clip]
    pixels: torch.Tensor
    features: VideoFeatures


def encode_clips(demo: DemoModel, clips: Sequence[Clip], workdir: str | Path | None = None) -> EncodedSet:
    """Write each clip as H.264 mp4, decode it with decord, sample, preprocess, and encode."""
    with tempfile.TemporaryDirectory(prefix="xclip-demo-eval-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        videos = []
        for i, clip in enumerate(clips):
            path = root / f"clip{i:04d}.mp4"
            write_mp4(path, clip.frames, EVAL_FPS)
            videos.append(decode_sampled(path, demo.num_frames))
    pixels = pixel_values(demo, videos)
    return EncodedSet(clips=list(clips), pixels=pixels, features=video_features(demo, pixels))


def retrieval_clips(n: int, seed: int = RETRIEVAL_SEED) -> list[Clip]:
    """``n`` clips from the same distribution as training (one or two shapes), from a held-out seed."""
    rng = np.random.default_rng(seed)
    return [make_clip(rng) for _ in range(n)]


def direction_clips(n: int, seed: int = DIRECTION_SEED) -> list[Clip]:
    """``n`` one-shape clips, alternately moving left and right."""
    rng = np.random.default_rng(seed)
    motions = ("moving left", "moving right")
    return [make_clip(rng, random_spec(rng, motion=motions[i % 2])) for i in range(n)]


def tagging_clips(per_motion: int, seed: int = TAGGING_SEED) -> list[Clip]:
    """``per_motion`` one-shape clips of each of the 7 motions."""
    rng = np.random.default_rng(seed)
    return [make_clip(rng, random_spec(rng, motion=m)) for _ in range(per_motion) for m in MOTIONS]


# ---------------------------------------------------------------------------------------------- metrics


def recall_at(scores: torch.Tensor, captions: Sequence[str], ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Text-to-video recall: query ``i`` is clip ``i``'s caption, ``scores`` is ``[videos, queries]``; a hit
    at k when one of the k best-scored clips has exactly the query's caption (captions repeat across clips, so
    the query's own clip is not the only right answer)."""
    order = torch.argsort(scores.T, dim=1, descending=True)
    caps = np.array(captions, dtype=object)
    out = {}
    for k in ks:
        hits = [bool((caps[order[q, :k].numpy()] == captions[q]).any()) for q in range(len(captions))]
        out[f"recall@{k}"] = float(np.mean(hits))
    return out


def direction_accuracy(demo: DemoModel, encoded: EncodedSet, features: VideoFeatures | None = None) -> float:
    """Fraction of left/right clips whose own caption outscores the same caption with the opposite
    direction."""
    features = features or encoded.features
    correct = []
    for i, clip in enumerate(encoded.clips):
        shape = clip.spec.shapes[0]
        opposite = "moving right" if shape.motion == "moving left" else "moving left"
        texts = [clip.caption, f"{shape.colour} {shape.shape} {opposite}"]
        one = VideoFeatures(v=features.v[i : i + 1], z=features.z[i : i + 1])
        s = prompted_scores(demo, one, text_features(demo, texts))[0]
        correct.append(bool(s[0] > s[1]))
    return float(np.mean(correct))


def tagging(demo: DemoModel, encoded: EncodedSet, labels: Sequence[str] = MOTIONS) -> dict[str, Any]:
    """Zero-shot tagging: softmax over ``labels`` of ``exp(logit_scale) * score``; accuracy of the top label
    against each clip's (single) motion, plus per-motion accuracy and the mean probability of the right
    label."""
    scores = prompted_scores(demo, encoded.features, text_features(demo, labels))
    probs = torch.softmax(demo.model.logit_scale.exp() * scores, dim=-1)
    truth = [labels.index(c.spec.shapes[0].motion) for c in encoded.clips]
    pred = probs.argmax(dim=-1).tolist()
    per_label = {
        label: float(np.mean([p == t for p, t in zip(pred, truth, strict=True) if t == j]))
        for j, label in enumerate(labels)
    }
    return {
        "accuracy": float(np.mean([p == t for p, t in zip(pred, truth, strict=True)])),
        "per_label": per_label,
        "mean_prob_true": float(np.mean([probs[i, t].item() for i, t in enumerate(truth)])),
    }


def single_frame_features(demo: DemoModel, pixels: torch.Tensor, which: int) -> VideoFeatures:
    """Features of the same clips with all T frames replaced by sampled frame ``which`` (a still image)."""
    still = pixels[:, which : which + 1].expand_as(pixels).contiguous()
    return video_features(demo, still)


def captions_of(clips: Sequence[Clip]) -> list[str]:
    """Canonical captions (``caption_for``) of ``clips``."""
    return [caption_for(c.spec) for c in clips]
