"""The lean text path (`xclip_search.textencode`) gives transformers' own text embeddings; the query cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from xclip_search.checkpoint import DEMO_MODEL_DIR, Checkpoint, load_checkpoint
from xclip_search.encoder import XClipEncoder
from xclip_search.textencode import MAX_TEXT_TOKENS, TextCache, TextTower

TEXTS = [
    "a",
    "a dog catching a frisbee",
    "  Someone SLICING bread, in a kitchen!  ",
    "fireworks over a city at night " * 4,
    "word " * 120,  # cut to 77 tokens
    "été à la plage 🌊",
]


def reference(ckpt: Checkpoint, text: str) -> torch.Tensor:
    enc = ckpt.tokenizer([text], truncation=True, max_length=MAX_TEXT_TOKENS, return_tensors="pt")
    with torch.inference_mode():
        return ckpt.model.get_text_features(**enc).pooler_output[0]


@pytest.fixture(scope="module")
def demo_ckpt() -> Checkpoint:
    return load_checkpoint(str(DEMO_MODEL_DIR), device="cpu")


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("which", ["tiny", "other", "demo"])
def test_tower_matches_get_text_features(
    which: str, attention: str, tiny_ckpt: Path, other_ckpt: Path, demo_ckpt: Checkpoint
) -> None:
    if which == "demo":
        ckpt = demo_ckpt
    else:
        ckpt = load_checkpoint(str(tiny_ckpt if which == "tiny" else other_ckpt), device="cpu")
    before = ckpt.model.text_model.config._attn_implementation
    ckpt.model.set_attn_implementation(attention)
    try:
        tower = TextTower(ckpt.model)
        assert tower.eager == (attention == "eager")
        for text in TEXTS:
            ids = ckpt.tokenizer(text, truncation=True, max_length=MAX_TEXT_TOKENS)["input_ids"]
            assert len(ids) <= MAX_TEXT_TOKENS
            got = tower.encode(ids)
            want = reference(ckpt, text)
            assert got.shape == want.shape
            assert float((got - want).abs().max()) <= 1e-6, text
    finally:
        ckpt.model.set_attn_implementation(before)


def test_tower_refuses_empty_and_overlong(checkpoint: Checkpoint) -> None:
    tower = TextTower(checkpoint.model)
    with pytest.raises(ValueError):
        tower.encode([])
    with pytest.raises(ValueError):
        tower.encode([1] * (MAX_TEXT_TOKENS + 1))


def test_encoder_single_text_is_get_text_features_and_cached(
    checkpoint: Checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    enc = XClipEncoder(checkpoint)
    t = enc.encode_texts(["a dog catching a frisbee"])
    want = reference(checkpoint, "a dog catching a frisbee").numpy()
    assert t.shape == (1, want.shape[0]) and t.dtype == np.float32
    assert np.abs(t[0] - want).max() <= 1e-6

    # A repeated query (stripped the same way) is answered from the cache: the model is not run again.
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model ran for a cached text")

    monkeypatch.setattr(TextTower, "encode", fail)
    monkeypatch.setattr(XClipEncoder, "_encode_uncached", fail)
    again = enc.encode_texts(["  a dog catching a frisbee "])
    assert np.array_equal(again, t)
    assert enc.text_cache.hits == 1
    # The cached row cannot be changed through a returned array.
    again[0, 0] += 1.0
    assert np.array_equal(enc.encode_texts(["a dog catching a frisbee"]), t)


def test_batch_and_single_agree(checkpoint: Checkpoint) -> None:
    texts = ["a cat", "a person riding a bike on a mountain road", "waves"]
    batch = XClipEncoder(checkpoint, text_cache_size=0).encode_texts(texts)
    single = XClipEncoder(checkpoint, text_cache_size=0)
    rows = np.stack([single.encode_texts([t])[0] for t in texts])
    assert np.abs(batch - rows).max() <= 1e-5
    # Mixed: some cached, one new; order and duplicates kept.
    enc = XClipEncoder(checkpoint)
    enc.encode_texts(["a cat"])
    mixed = enc.encode_texts(["waves", "a cat", "waves"])
    assert np.abs(mixed - rows[[2, 0, 2]]).max() <= 1e-5


def test_text_cache_lru_and_model_key() -> None:
    cache = TextCache(2)
    a, b, c = (np.full(3, x, np.float32) for x in (1.0, 2.0, 3.0))
    cache.put("m1", "a", a)
    cache.put("m1", "b", b)
    assert cache.get("m2", "a") is None  # another model's embedding is never returned
    assert np.array_equal(cache.get("m1", "a"), a)  # type: ignore[arg-type]
    cache.put("m1", "c", c)  # evicts "b", the least recently used
    assert cache.get("m1", "b") is None
    assert cache.get("m1", "a") is not None and cache.get("m1", "c") is not None
    assert len(cache) == 2
    none = TextCache(0)
    none.put("m1", "a", a)
    assert len(none) == 0 and none.get("m1", "a") is None
