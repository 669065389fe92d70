"""`scripts/train_demo_model.py` on a tiny budget: it writes a loadable `save_pretrained` directory, and the
same seed gives the same weights (the issue asks for reproducible training)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import load_file

from xclip_search.demo import evaluation as ev

REPO = Path(__file__).resolve().parent.parent

# A few steps of a narrow model on small batches: seconds, not the 27-minute recipe.
TINY = [
    "--steps", "3", "--batch-size", "6", "--warmup", "1", "--workers", "0", "--eval-every", "3",
    "--val-clips", "4", "--vision-hidden", "32", "--vision-layers", "1", "--vision-heads", "2",
    "--text-hidden", "32", "--text-layers", "1", "--text-heads", "2", "--projection-dim", "32",
    "--prompt-heads", "2", "--image-size", "48", "--patch-size", "16",
]  # fmt: skip


@pytest.fixture(scope="module")
def train_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_demo_model", REPO / "scripts" / "train_demo_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_writes_a_loadable_model_and_repeats_with_the_same_seed(train_script: ModuleType, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    try:
        for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
            assert train_script.main([*TINY, "--threads", "1", "--seed", seed, "--out", str(tmp_path / name)]) == 0
    finally:
        torch.set_num_threads(threads)
    a, b = tmp_path / "a", tmp_path / "b"
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "training_log.json"} <= {
        p.name for p in a.iterdir()
    }
    config = json.loads((a / "config.json").read_text())
    assert config["vision_config"]["hidden_act"] == "gelu" and config["vision_config"]["num_frames"] == 8
    log = json.loads((a / "training_log.json").read_text())
    assert log["steps_done"] == 3 and not log["stopped_early"] and log["validation"][-1]["step"] == 3

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    wc = load_file(tmp_path / "c" / "model.safetensors")  # the equality above is the seed's doing
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)

    demo = ev.load_demo_model(a)  # the way the product loads it: safetensors, offline, PIL processor
    assert demo.num_frames == 8
    pixels = ev.pixel_values(demo, [c.frames[:8] for c in ev.retrieval_clips(2, seed=5)])
    assert pixels.shape == (2, 8, 3, 48, 48)
    scores = ev.forward_scores(demo, pixels, ["red circle moving left", "blinking"])
    assert scores.shape == (2, 2) and torch.isfinite(scores).all()
