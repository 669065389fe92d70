"""Regression floors for the committed demonstration model (offline; real H.264 files, decord, PIL pixels).

The floors sit below what ``scripts/eval_demo_model.py`` measures on larger held-out sets (see the model's
README.md), so a retrained or broken model that loses much of its quality fails here.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("decord")
pytest.importorskip("transformers")

from xclip_search.demo import evaluation as ev  # noqa: E402

MODEL_DIR = ev.DEMO_MODEL_DIR


@pytest.fixture(scope="module")
def demo() -> ev.DemoModel:
    if not (MODEL_DIR / "model.safetensors").is_file():
        pytest.fail(f"demo model missing: {MODEL_DIR}")
    torch.set_num_threads(2)
    return ev.load_demo_model(MODEL_DIR)


def test_layout_and_size() -> None:
    names = {p.name for p in MODEL_DIR.iterdir()}
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)
    assert sum(p.stat().st_size for p in MODEL_DIR.iterdir()) <= 25_000_000
    config = json.loads((MODEL_DIR / "config.json").read_text())
    pre = json.loads((MODEL_DIR / "preprocessor_config.json").read_text())
    size = config["vision_config"]["image_size"]
    assert config["vision_config"]["num_frames"] == 8
    assert pre["image_processor_type"] == "VideoMAEImageProcessor"
    assert pre["size"] == {"shortest_edge": size} and pre["crop_size"] == {"height": size, "width": size}


def test_loads_by_short_name() -> None:
    from xclip_search.checkpoint import load_checkpoint

    ckpt = load_checkpoint("demo", device="cpu")
    assert ckpt.directory == MODEL_DIR.resolve() or ckpt.directory == MODEL_DIR
    assert ckpt.identity.source == "demo" and ckpt.num_frames == 8
    assert ckpt.tokenizer("red circle moving left")["input_ids"][0] == 49406  # the real CLIP BPE vocabulary


def test_scores_match_forward(demo: ev.DemoModel) -> None:
    clips = ev.retrieval_clips(4, seed=ev.RETRIEVAL_SEED + 500)
    enc = ev.encode_clips(demo, clips)
    texts = [*ev.captions_of(clips), "moving left", "red circle"]
    ours = ev.prompted_scores(demo, enc.features, ev.text_features(demo, texts))
    ref = ev.forward_scores(demo, enc.pixels, texts)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_quality_floors(demo: ev.DemoModel) -> None:
    # Offset seeds: a different sample from the one the README's figures were measured on. Floors sit below
    # what this sample measured when the model was committed (recall@1 0.845, recall@5 0.99 over 200 clips;
    # direction 1.0 and tagging 1.0 on the smaller sets), so only a real regression fails. 200 clips (12 s)
    # because a 60-clip sample is too easy to tell models apart: the previous model (0.73 on the README's set)
    # scored 0.917 on 60 clips here, like this one, and 0.75 on these 200, below the floor.
    clips = ev.retrieval_clips(200, seed=ev.RETRIEVAL_SEED + 100)
    enc = ev.encode_clips(demo, clips)
    captions = ev.captions_of(clips)
    recall = ev.recall_at(ev.prompted_scores(demo, enc.features, ev.text_features(demo, captions)), captions)
    assert recall["recall@1"] >= 0.78, recall
    assert recall["recall@5"] >= 0.95, recall

    directions = ev.encode_clips(demo, ev.direction_clips(40, ev.DIRECTION_SEED + 100))
    assert ev.direction_accuracy(demo, directions) >= 0.9
    # a still frame cannot tell left from right: the direction comes from temporal modelling
    still = ev.single_frame_features(demo, directions.pixels, demo.num_frames // 2)
    assert ev.direction_accuracy(demo, directions, still) <= 0.75

    tags = ev.tagging(demo, ev.encode_clips(demo, ev.tagging_clips(6, ev.TAGGING_SEED + 100)))
    assert tags["accuracy"] >= 0.85, tags
