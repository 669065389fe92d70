from __future__ import annotations

import json
from pathlib import Path

import pytest

from xclip_search.checkpoint import load_checkpoint, resolve_checkpoint
from xclip_search.errors import CheckpointError, InvalidArgumentError
from xclip_search.testing import make_tiny_checkpoint


def test_loads_local_checkpoint_with_its_tokenizer_and_pixels(tiny_ckpt: Path) -> None:
    ckpt = load_checkpoint(str(tiny_ckpt), device="cpu")
    assert ckpt.device.type == "cpu" and str(ckpt.dtype) == "torch.float32"
    assert ckpt.identity.source == str(tiny_ckpt.resolve()) and ckpt.identity.revision is None
    assert ckpt.identity.num_tokens == 16 and ckpt.identity.num_frames == 8
    assert ckpt.pixels.crop == (32, 32)
    assert ckpt.tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert not ckpt.model.training


def test_config_hash_is_stable_and_changes_with_the_config(tiny_ckpt: Path, other_ckpt: Path) -> None:
    a = load_checkpoint(str(tiny_ckpt)).identity.config_hash
    assert a == load_checkpoint(str(tiny_ckpt)).identity.config_hash
    assert a != load_checkpoint(str(other_ckpt)).identity.config_hash


def test_pickled_weights_are_refused(tmp_path: Path) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "pickled", pickled=True)
    with pytest.raises(CheckpointError, match="pickled") as err:
        load_checkpoint(str(ckpt))
    assert "safetensors" in (err.value.hint or "")


def test_not_an_xclip_checkpoint(tmp_path: Path, tiny_ckpt: Path) -> None:
    bad = tmp_path / "bert"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="not X-CLIP"):
        load_checkpoint(str(bad))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_checkpoint(str(empty))


def test_missing_preprocessor_config_is_refused(tmp_path: Path) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "nopre")
    (ckpt / "preprocessor_config.json").unlink()
    with pytest.raises(CheckpointError, match="preprocessor_config"):
        load_checkpoint(str(ckpt))


def test_crop_that_does_not_fit_the_model_is_refused(tmp_path: Path) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "crop", preprocessor={"size": 64, "crop_size": 48})
    with pytest.raises(CheckpointError, match="crops to"):
        load_checkpoint(str(ckpt))


def test_missing_directory_and_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint(str(tmp_path / "nope"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="is a file"):
        resolve_checkpoint(str(tmp_path / "weights.bin"))
    with pytest.raises(InvalidArgumentError):
        resolve_checkpoint("  ")


def test_hub_id_without_network_fails_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="Cannot fetch") as err:
        resolve_checkpoint("someone/not-cached-model")
    assert "'demo'" in (err.value.hint or "") and "--" not in (err.value.hint or "")  # the library names no flag


@pytest.mark.parametrize("device,dtype", [("tpu", None), ("cuda", None), ("cpu", "float16"), ("cpu", "int8")])
def test_bad_device_or_dtype(tiny_ckpt: Path, device: str, dtype: str | None) -> None:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(InvalidArgumentError):
        load_checkpoint(str(tiny_ckpt), device=device, dtype=dtype)
