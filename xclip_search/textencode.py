"""One query text to X-CLIP's projected text embedding ``t`` at the cost of its matrix products.

Encoding one short query through ``XCLIPModel.get_text_features`` spends a few milliseconds outside the
arithmetic on CPU: module dispatch for ~150 submodules, output records, building a causal mask, argument
checking and the tokenizer's batch and tensor machinery. `TextTower` runs the same operations on the same
weights (CLIP's causal text transformer, pooled at the end token, projected) as plain tensor calls for one
unpadded text, with the causal structure given to the attention kernel instead of a built mask. What remains is
reading the weights: a base-size tower holds ~150 MB of float32 weights and one query of ~10 tokens reads all of
them from memory, not cache: on the 2-core development VM (2 threads) the 72 matrix products of a 12-token
query took 88% of a 23 ms encoding (torch.profiler: ~310 us each, ~7 GB/s of weights where the VM copies
24 GB/s), the ~180 small operations around them the rest (`scripts/bench_query.py` prints the encoding time
per query). Batches
(tagging's label lists) still go through transformers, where padding and masks matter.

`TextCache` keeps recent query embeddings, keyed by the model's identity and the text, so a repeated query
(paging, refining filters, as-you-type prefixes revisited) costs a dictionary lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase, XCLIPModel

from .identity import ModelIdentity

# CLIP's context length: longer texts are cut to their first 77 tokens (end token included).
MAX_TEXT_TOKENS = 77


@dataclass(frozen=True)
class _Layer:
    ln1: tuple[torch.Tensor, torch.Tensor]
    q: tuple[torch.Tensor, torch.Tensor]
    k: tuple[torch.Tensor, torch.Tensor]
    v: tuple[torch.Tensor, torch.Tensor]
    out: tuple[torch.Tensor, torch.Tensor]
    ln2: tuple[torch.Tensor, torch.Tensor]
    fc1: tuple[torch.Tensor, torch.Tensor]
    fc2: tuple[torch.Tensor, torch.Tensor]
    act: Callable[[torch.Tensor], torch.Tensor]


def _linear(module: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear or layer-norm module's (weight, bias): the tensors themselves, not copies."""
    return module.weight, module.bias


class TextTower:
    """``get_text_features`` for one unpadded token sequence, without transformers' per-call machinery.

    Reads the model's own weight tensors (no copies), so it follows the model wherever it is moved. The
    attention follows the checkpoint's choice: ``eager`` (softmax over masked products in float32, as
    transformers' eager path) or the fused kernel (``sdpa``) with ``is_causal``; both agree with
    transformers to float rounding (tests/test_textencode.py holds them to 1e-6).
    """

    def __init__(self, model: XCLIPModel) -> None:
        tm: Any = model.text_model  # transformers' submodules are typed loosely
        cfg = tm.config
        self.eager = getattr(cfg, "_attn_implementation", "eager") == "eager"
        self.heads = int(cfg.num_attention_heads)
        self.head_dim = int(cfg.hidden_size) // self.heads
        self.scale = self.head_dim**-0.5
        self.eps = float(cfg.layer_norm_eps)
        self.token_embedding = tm.embeddings.token_embedding.weight
        self.position_embedding = tm.embeddings.position_embedding.weight
        self.final_ln = _linear(tm.final_layer_norm)
        self.projection: torch.Tensor = model.text_projection.weight
        self.max_tokens = int(self.position_embedding.shape[0])
        # transformers' X-CLIP pools at the highest token id (the end token, see XCLIPTextModel.forward).
        self.legacy_pooling = int(getattr(tm, "eos_token_id", 2)) == 2
        self.eos_token_id = int(getattr(tm, "eos_token_id", 2))
        self.layers = [
            _Layer(
                ln1=_linear(layer.layer_norm1),
                q=_linear(layer.self_attn.q_proj),
                k=_linear(layer.self_attn.k_proj),
                v=_linear(layer.self_attn.v_proj),
                out=_linear(layer.self_attn.out_proj),
                ln2=_linear(layer.layer_norm2),
                fc1=_linear(layer.mlp.fc1),
                fc2=_linear(layer.mlp.fc2),
                act=layer.mlp.activation_fn,
            )
            for layer in tm.encoder.layers
        ]

    @torch.inference_mode()
    def encode(self, input_ids: Sequence[int]) -> torch.Tensor:
        """Projected embedding (D,) of one token sequence (start and end tokens included)."""
        length = len(input_ids)
        if not 0 < length <= self.max_tokens:
            raise ValueError(f"Expected 1 to {self.max_tokens} tokens, got {length}")
        device = self.token_embedding.device
        ids = torch.as_tensor(list(input_ids), dtype=torch.long, device=device)
        h = F.embedding(ids, self.token_embedding) + self.position_embedding[:length]
        h = h[None]  # (1, L, width): the shapes transformers' layers see, so the kernels (and rounding) match
        mask = None
        if self.eager and length > 1:
            mask = torch.full((length, length), torch.finfo(h.dtype).min, dtype=h.dtype, device=device).triu(1)
        width = h.shape[-1]
        for layer in self.layers:
            x = F.layer_norm(h, (width,), *layer.ln1, self.eps)
            q = F.linear(x, *layer.q).view(1, length, self.heads, self.head_dim).transpose(1, 2)
            k = F.linear(x, *layer.k).view(1, length, self.heads, self.head_dim).transpose(1, 2)
            v = F.linear(x, *layer.v).view(1, length, self.heads, self.head_dim).transpose(1, 2)
            if self.eager:
                weights = torch.matmul(q, k.transpose(-1, -2)) * self.scale
                if mask is not None:
                    weights = weights + mask
                weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(q.dtype)
                attn = torch.matmul(weights, v)
            else:
                attn = F.scaled_dot_product_attention(q, k, v, is_causal=length > 1, scale=self.scale)
            attn = attn.transpose(1, 2).reshape(1, length, width)
            h = h + F.linear(attn, *layer.out)
            x = F.layer_norm(h, (width,), *layer.ln2, self.eps)
            h = h + F.linear(layer.act(F.linear(x, *layer.fc1)), *layer.fc2)
        h = F.layer_norm(h, (width,), *self.final_ln, self.eps)
        if self.legacy_pooling:
            pos = int(ids.to(torch.int).argmax())
        else:
            pos = int((ids == self.eos_token_id).to(torch.int).argmax())
        return F.linear(h[:, pos], self.projection)[0]

    def encode_text(self, tokenizer: PreTrainedTokenizerBase, text: str) -> np.ndarray:
        """One text to its projected embedding, float32 on the CPU (tokenized as `XClipEncoder` batches are)."""
        ids = tokenizer(text, truncation=True, max_length=MAX_TEXT_TOKENS)["input_ids"]
        return np.asarray(self.encode(ids).float().cpu().numpy(), dtype=np.float32)


def model_key(identity: ModelIdentity) -> str:
    """The part of a model's identity that decides its text embeddings, as a cache key."""
    return f"{identity.source}@{identity.revision or ''}#{identity.config_hash}"


class TextCache:
    """Least-recently-used text embeddings keyed by (model key, text); `size` 0 keeps nothing."""

    def __init__(self, size: int) -> None:
        self.size = max(0, int(size))
        self._rows: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, model: str, text: str) -> np.ndarray | None:
        row = self._rows.get((model, text))
        if row is None:
            self.misses += 1
            return None
        self._rows.move_to_end((model, text))
        self.hits += 1
        return row

    def put(self, model: str, text: str, row: np.ndarray) -> None:
        if self.size == 0:
            return
        row = np.array(row, dtype=np.float32)  # a private copy, read-only: callers share it
        row.flags.writeable = False
        self._rows[(model, text)] = row
        self._rows.move_to_end((model, text))
        while len(self._rows) > self.size:
            self._rows.popitem(last=False)

    def clear(self) -> None:
        self._rows.clear()


__all__ = ["MAX_TEXT_TOKENS", "TextCache", "TextTower", "model_key"]
