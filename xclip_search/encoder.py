"""X-CLIP's two towers as the index needs them: per segment ``v`` and ``Z``, per text ``t``.

`encode_videos` follows `XCLIPModel.forward` step by step but stops before the text meets the video, keeping
the two things the prompted score needs later: the MIT-pooled video embedding ``v`` (stored unit-norm, since
only its direction enters a cosine) and the prompt context ``Z`` (the frame-averaged, projected patch tokens,
already through the prompt generator's layer norm, which does not depend on the text).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .checkpoint import Checkpoint
from .errors import InvalidArgumentError
from .textencode import MAX_TEXT_TOKENS, TextCache, TextTower, model_key


@dataclass(frozen=True)
class VideoEmbeddings:
    """``v``: (B, D) float32 unit vectors; ``z``: (B, N, D) float32 prompt contexts."""

    v: np.ndarray
    z: np.ndarray

    def __len__(self) -> int:
        return int(self.v.shape[0])


class XClipEncoder:
    """Batched video and text encoding with one loaded checkpoint; text embeddings cached per string."""

    def __init__(self, checkpoint: Checkpoint, *, text_cache_size: int = 4096) -> None:
        self.checkpoint = checkpoint
        self.model = checkpoint.model
        self.device = checkpoint.device
        self.dtype = checkpoint.dtype
        self.weight_dtype = next(checkpoint.model.parameters()).dtype
        # Weights kept in float32 for a lower compute dtype: run that dtype under autocast.
        self.autocast_dtype = self.dtype if self.dtype != self.weight_dtype else None
        if self.device.type == "cuda" and self.dtype == torch.float32:
            exact_float32_convolutions()
        self.num_frames = checkpoint.num_frames
        self._text_cache = TextCache(text_cache_size)
        self._model_key = model_key(checkpoint.identity)
        # One query text skips transformers' per-call machinery (`textencode`), where the model runs in the dtype
        # of its weights (the usual case; otherwise transformers runs it as configured).
        same_dtype = checkpoint.model.text_projection.weight.dtype == self.dtype
        self._text_tower = TextTower(self.model) if same_dtype else None

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        """bfloat16 on CUDA runs float32 weights under autocast (see `checkpoint.load_checkpoint`)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    @torch.inference_mode()
    def encode_videos(self, pixel_values: np.ndarray | torch.Tensor) -> VideoEmbeddings:
        """Pixel values ``(B, T, 3, H, W)`` to per-segment ``v`` and ``Z`` (see the module docstring)."""
        v, z = self.encode_video_tensors(torch.as_tensor(pixel_values))
        return VideoEmbeddings(
            v=v.float().cpu().numpy(),
            z=z.float().cpu().numpy(),
        )

    @torch.inference_mode()
    def encode_video_tensors(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`encode_videos` leaving ``v`` and ``Z`` on the model's device, in its dtype (no synchronisation), for
        callers that overlap the next batch's transfer with this one's compute (`indexer.feed`)."""
        if pixels.ndim != 5 or pixels.shape[1] != self.num_frames:
            raise InvalidArgumentError(
                f"Expected pixel values of shape (B, {self.num_frames}, 3, H, W), got {tuple(pixels.shape)}"
            )
        batch, frames, channels, height, width = pixels.shape
        flat = pixels.reshape(-1, channels, height, width).to(self.device, self.weight_dtype)
        with self._autocast():
            return self._vision(flat, batch, frames)

    def _vision(self, flat: torch.Tensor, batch: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        vision = m.vision_model(pixel_values=flat)
        cls = m.visual_projection(vision.pooler_output).view(batch, frames, -1)
        v = m.mit(cls).pooler_output
        patches = m.prompts_visual_layernorm(vision.last_hidden_state[:, 1:, :])
        patches = patches @ m.prompts_visual_projection
        z = patches.view(batch, frames, -1, v.shape[-1]).mean(dim=1)
        z = m.prompts_generator.layernorm(z)
        v = v / v.norm(p=2, dim=-1, keepdim=True)
        return v, z

    @torch.inference_mode()
    def _encode_uncached(self, texts: Sequence[str]) -> np.ndarray:
        tok = self.checkpoint.tokenizer
        # A single text is not padded: the text tower is causal and reads the end token, so padding changes
        # nothing but costs ~2.5x on CPU. Batches pad to their longest member only.
        enc = tok(
            list(texts),
            padding=len(texts) > 1,
            truncation=True,
            max_length=MAX_TEXT_TOKENS,
            return_tensors="pt",
        )
        m = self.model
        with self._autocast():
            out = m.text_model(
                input_ids=enc["input_ids"].to(self.device),
                attention_mask=enc["attention_mask"].to(self.device),
            )
            t = m.text_projection(out.pooler_output)
        return np.asarray(t.float().cpu().numpy(), dtype=np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Projected text embeddings ``t`` (L, D), not normalized: the prompt generator reads them raw.

        Recent texts come from an LRU cache; a single new text goes through the lean `TextTower` (identical to
        ``get_text_features``), several at once through transformers in one padded batch.
        """
        if isinstance(texts, str):
            texts = [texts]
        cleaned = [_check_text(t) for t in texts]
        rows: dict[str, np.ndarray] = {}
        missing = []
        for text in dict.fromkeys(cleaned):
            row = self._text_cache.get(self._model_key, text)
            if row is None:
                missing.append(text)
            else:
                rows[text] = row
        if len(missing) == 1 and self._text_tower is not None:
            rows[missing[0]] = self._text_tower.encode_text(self.checkpoint.tokenizer, missing[0])
        elif missing:
            rows.update(zip(missing, self._encode_uncached(missing), strict=True))
        for text in missing:
            self._text_cache.put(self._model_key, text, rows[text])
        return np.stack([rows[t] for t in cleaned]).astype(np.float32, copy=False)

    @property
    def text_cache(self) -> TextCache:
        """The cache of recent text embeddings (benchmarks clear it to measure cold queries)."""
        return self._text_cache


def exact_float32_convolutions() -> None:
    """Keep cuDNN's float32 convolutions in float32 (process-wide).

    PyTorch lets cuDNN run float32 convolutions in TF32 on Ampere and newer GPUs by default (matrix products
    it keeps in float32). X-CLIP's patch embedding is a convolution over 3,072 values per patch, and TF32's
    10-bit mantissa there can move scores by more than the 1e-4 a float32 run promises (an estimate: not yet
    measured on a GPU), so float32 on CUDA turns it off. Lower precision is what ``--dtype float16``/``bfloat16``
    are for.
    """
    # The flag every PyTorch version honours; its newer per-operator form (cudnn.conv.fp32_precision) refuses to be
    # read back through this one once the two are mixed, and other code may read this one.
    torch.backends.cudnn.allow_tf32 = False


def _check_text(text: str) -> str:
    if not isinstance(text, str):
        raise InvalidArgumentError(f"Expected text, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise InvalidArgumentError(
            "Empty query text", hint="Type what happens in the video, e.g. 'a dog catching a ball'."
        )
    return stripped
