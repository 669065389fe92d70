"""X-CLIP's exact video-text score from stored ``v`` and ``Z``: the prompt generator on one text token.

The score of a pair is ``cos(v, t + PG(t, Z))``. `XCLIPPromptGenerator` projects all N visual tokens through
``Wk`` and ``Wv`` for every pair (2·N·D² multiply-adds per layer). With a single text token the projections can
be moved onto the query side, because ``Wk`` and ``Wv`` have no bias:

    per head h:  q_h · (Z Wk_hᵀ)ᵀ = (q_h Wk_h) · Zᵀ        a_h · (Z Wv_hᵀ) = (a_h · Z) Wv_hᵀ

so a pair costs 2·H·N·D for attention plus D² work on one vector, and layer 1's ``q_h Wk_h`` depends on the
text alone and is shared by every candidate. The result equals the reference up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import XCLIPModel

# Pairs scored per step: small enough that the per-pair tensors (H x D floats each) stay in cache, large enough
# that the matrix products run at full speed (measured on 2 cores; see scripts/bench_query.py).
_PAIRS_PER_CHUNK = 512


@dataclass(frozen=True)
class _Layer:
    """One prompt-generator layer; ``Wk`` as ``(H, head_dim, D)`` and ``Wv`` transposed as ``(H, D, head_dim)``."""

    norm1: nn.Module
    norm3: nn.Module
    mlp: nn.Module
    proj: nn.Module
    wq: torch.Tensor
    wk: torch.Tensor
    wv_t: torch.Tensor
    heads: int
    head_dim: int
    scale: float


class PromptScorer:
    """Exact prompted cosine scores for texts against stored segments (weights shared with one model)."""

    def __init__(self, model: XCLIPModel) -> None:
        pg: Any = model.prompts_generator
        self.alpha: torch.Tensor = pg.alpha.detach()
        self.layers: list[_Layer] = []
        for layer in pg.decoder:
            ca = layer.cross_attn
            heads, head_dim = int(ca.num_heads), int(ca.head_dim)
            dim = heads * head_dim
            self.layers.append(
                _Layer(
                    norm1=layer.norm1,
                    norm3=layer.norm3,
                    mlp=layer.mlp,
                    proj=ca.proj,
                    wq=ca.q_proj.weight.detach(),
                    wk=ca.k_proj.weight.detach().view(heads, head_dim, dim),
                    wv_t=ca.v_proj.weight.detach().view(heads, head_dim, dim).transpose(1, 2).contiguous(),
                    heads=heads,
                    head_dim=head_dim,
                    scale=float(ca.scale),
                )
            )
        self.device = self.alpha.device
        self.dtype = self.alpha.dtype

    def flops_per_pair(self, tokens: int) -> int:
        """Floating-point operations of one (segment, text) pair with `tokens` visual tokens, as `score` runs it
        (multiply-adds count two; layer 1's text-only query keys are shared and left out): what the benchmark
        divides by the rerank's time to compare with the machine's matrix-product peak."""
        total = 0
        for i, layer in enumerate(self.layers):
            dim = layer.heads * layer.head_dim
            mlp = sum(m.weight.numel() for m in layer.mlp.modules() if isinstance(m, nn.Linear))
            total += 2 * 2 * layer.heads * tokens * dim  # scores against Z and the pooled a_h . Z
            proj = sum(p.numel() for p in layer.proj.parameters() if p.dim() == 2)
            total += 2 * (dim * dim + proj + mlp)  # (a_h . Z) Wv_h^T, proj, MLP
            if i > 0:
                total += 2 * (layer.wq.numel() + layer.wk.numel())  # per-pair query and query-side keys
        return total

    @staticmethod
    def _query_keys(layer: _Layer, state: torch.Tensor) -> torch.Tensor:
        """Query-side keys ``q_h Wk_h`` for states (M, D): (M, H, D), one matrix product per head."""
        q = F.linear(layer.norm1(state), layer.wq)
        per_head = q.view(-1, layer.heads, layer.head_dim).transpose(0, 1)  # (H, M, hd)
        return torch.bmm(per_head, layer.wk).transpose(0, 1)  # (M, H, D)

    @staticmethod
    def _attend(layer: _Layer, scores: torch.Tensor, z: torch.Tensor, texts: int) -> torch.Tensor:
        """Attention output (B·L, D) from raw scores (B, L·H, N) over contexts ``z`` (B, N, D)."""
        weights = (scores * layer.scale).softmax(dim=-1)
        pooled = torch.bmm(weights, z)  # (B, L·H, D): a_h · Z
        batch = z.shape[0]
        per_head = pooled.view(batch * texts, layer.heads, -1).transpose(0, 1)  # (H, B·L, D)
        heads_out = torch.bmm(per_head, layer.wv_t)  # (H, B·L, hd): (a_h · Z) Wv_hᵀ
        out: torch.Tensor = layer.proj(heads_out.transpose(0, 1).reshape(batch * texts, -1))
        return out

    @torch.inference_mode()
    def prompted_texts(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``t + PG(t, Z)`` for every (segment, text) pair: t (L, D), z (B, N, D) -> (B, L, D)."""
        batch, tokens, dim = z.shape
        texts = t.shape[0]
        state = t.unsqueeze(0).expand(batch, -1, -1).reshape(batch * texts, dim)
        z_t = z.transpose(1, 2)  # (B, D, N)
        for i, layer in enumerate(self.layers):
            if i == 0:
                # The first layer's query depends on the text alone: one product scores every token of every
                # segment against it.
                keys = self._query_keys(layer, t).reshape(texts * layer.heads, dim)
                scores = (z.reshape(batch * tokens, dim) @ keys.T).view(batch, tokens, -1).transpose(1, 2)
            else:
                keys = self._query_keys(layer, state).reshape(batch, texts * layer.heads, dim)
                scores = torch.bmm(keys, z_t)
            state = state + self._attend(layer, scores, z, texts)
            state = state + layer.mlp(layer.norm3(state))
        return t.unsqueeze(0) + self.alpha * state.view(batch, texts, dim)

    @torch.inference_mode()
    def score(
        self, v: np.ndarray | torch.Tensor, z: np.ndarray | torch.Tensor, t: np.ndarray | torch.Tensor
    ) -> np.ndarray:
        """Exact cosines (B, L) of B segments (unit ``v`` (B, D), ``Z`` (B, N, D)) against L texts ``t`` (L, D).

        Equal to ``XCLIPModel.forward(...).logits_per_video / logit_scale.exp()`` for the same inputs.
        """
        vt = self._tensor(v)
        zt = self._tensor(z)
        tt = self._tensor(t)
        if vt.shape[0] == 0:
            return np.zeros((0, tt.shape[0]), dtype=np.float32)
        vt = vt / vt.norm(p=2, dim=-1, keepdim=True)
        out = np.empty((vt.shape[0], tt.shape[0]), dtype=np.float32)
        # Bound the (B, L, H, N) attention tensors: a whole vocabulary against many segments stays in memory.
        chunk = max(1, _PAIRS_PER_CHUNK // max(1, tt.shape[0]))
        for i in range(0, vt.shape[0], chunk):
            prompted = self.prompted_texts(tt, zt[i : i + chunk])
            prompted = prompted / prompted.norm(p=2, dim=-1, keepdim=True)
            out[i : i + chunk] = torch.einsum("bd,bld->bl", vt[i : i + chunk], prompted).float().cpu().numpy()
        return out

    def _tensor(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(self.device, self.dtype)
