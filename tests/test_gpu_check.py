"""The GPU path without a GPU: scripts/gpu_check.sh --dry-run, the nvdec decoder's wrapper, the GPU feed's pieces.

The dry run runs the check script's every section on the CPU (the CPU stands in for CUDA, CPU FAISS for GPU
FAISS, the nvdec wrapper in its CPU mode), so the script cannot rot between GPU runs. The nvdec wrapper's GPU
branch runs here against a stand-in PyNvVideoCodec module whose SimpleDecoder hands out PyAV's frames: the
frame-count check, the batched index calls, and both ways frames reach host memory.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from indexer.decoders import PyAVDecoder, decoder_chain, get_decoder, read_frames
from indexer.extract import CropNormalizer
from indexer.feed import ModelFeed, auto_batch_size, normalize_crops
from indexer.gpudecode import CPU_MODE, NvdecDecoder, host_rgb
from xclip_search.cli import cli
from xclip_search.errors import DependencyError, VideoError

from .conftest import REAL_CLIP, REAL_CLIP_HD

ROOT = Path(__file__).resolve().parent.parent


def test_dry_run_runs_every_section_and_prints_the_table(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--work", str(tmp_path / "work"),
         "--json", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| check | figure | value | pass |" in proc.stdout and "dry run" in proc.stdout
    report = json.loads(out.read_text())
    assert report["ok"] is True
    figures = {(f["section"], f["name"]): f for f in report["figures"]}
    assert {f["section"] for f in report["figures"]} >= {"scores", "index", "ann", "decode"}
    assert not any(f["name"] == "error" for f in report["figures"])
    exact = [f for (section, name), f in figures.items() if section == "scores" and "float32: max abs score" in name]
    assert len(exact) == 2 and all(f["passed"] and float(f["value"]) <= 1e-4 for f in exact)
    bf16 = [f for (section, name), f in figures.items() if "bfloat16: max abs score" in name]
    assert bf16 and all(float(f["value"]) > 0 for f in bf16)  # autocast ran: not the float32 numbers again
    assert figures[("index", "decoders the nvdec index records")]["passed"] is True
    assert figures[("decode", "pixel difference: max abs (0-255)")]["value"] == "0"  # CPU mode decodes with PyAV
    assert figures[("ann", "CPU FAISS: recall@10 with the x8 exact refine")]["passed"] is True


def test_gpu_check_refuses_a_machine_without_cuda() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""},
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1 and "--dry-run" in proc.stdout and "Traceback" not in proc.stderr
    if not any((Path(d) / "nvidia-smi").exists() for d in os.environ.get("PATH", "").split(os.pathsep)):
        shell = subprocess.run(
            ["bash", str(ROOT / "scripts" / "gpu_check.sh")], capture_output=True, text=True, timeout=60
        )
        assert shell.returncode == 1 and "no NVIDIA GPU" in shell.stderr  # before any install


# -- the GPU feed's pieces --------------------------------------------------------------------------------


def test_gpu_normalisation_gives_the_cpu_pixel_values_bit_for_bit(checkpoint: Any) -> None:
    crops = np.random.default_rng(0).integers(0, 256, size=(2, 8, 32, 32, 3), dtype=np.uint8)
    cpu = CropNormalizer(checkpoint.pixels)
    on_torch = normalize_crops(torch.from_numpy(crops), torch.from_numpy(cpu.table)).numpy()
    assert on_torch.shape == (2, 8, 3, 32, 32)
    assert np.array_equal(on_torch, cpu(crops))


def test_cpu_feed_is_the_plain_encoder_path(checkpoint: Any) -> None:
    from xclip_search.encoder import XClipEncoder

    crops = np.random.default_rng(1).integers(0, 256, size=(3, 8, 32, 32, 3), dtype=np.uint8)
    encoder = XClipEncoder(checkpoint)
    feed: ModelFeed[str] = ModelFeed(encoder, checkpoint.pixels, batch_size=2, auto_batch=True)
    got = feed.push(crops, "a") + feed.drain()
    assert [payload for payload, _ in got] == ["a"] and feed.batch_size == 2  # no auto batch size on the CPU
    want = encoder.encode_videos(CropNormalizer(checkpoint.pixels)(crops))
    assert np.array_equal(got[0][1].v, want.v) and np.array_equal(got[0][1].z, want.z)


def test_overlapped_feed_returns_each_batch_one_push_later_with_the_same_values(checkpoint: Any) -> None:
    from xclip_search.encoder import XClipEncoder

    rng = np.random.default_rng(3)
    batches = [rng.integers(0, 256, size=(n, 8, 32, 32, 3), dtype=np.uint8) for n in (2, 2, 1)]
    encoder = XClipEncoder(checkpoint)
    feed: ModelFeed[int] = ModelFeed(encoder, checkpoint.pixels, batch_size=2, overlap=True)
    returned = [[payload for payload, _ in feed.push(b, i)] for i, b in enumerate(batches)]
    assert returned == [[], [0], [1]]  # the staged path: one batch in flight, as on CUDA
    assert [payload for payload, _ in feed.poll()] == [2]  # finished (the CPU computes at once): no waiting
    fed = [*feed.push(batches[2], 3), *feed.push(batches[0], 4), *feed.drain()]
    assert [payload for payload, _ in fed] == [3, 4] and feed.drain() == [] and feed.poll() == []
    want = encoder.encode_videos(CropNormalizer(checkpoint.pixels)(batches[2]))  # pushed with payload 3
    assert np.array_equal(fed[0][1].v, want.v) and np.array_equal(fed[0][1].z, want.z)


def test_indexing_with_a_batch_in_flight_stores_the_same_vectors(
    tmp_path: Path, tiny_ckpt: Path, generated_videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import functools
    import shutil

    import indexer.ingest
    from indexer import IndexOptions, run_index
    from xclip_search.index import Index

    library = tmp_path / "lib"
    library.mkdir()
    for src in [*generated_videos.values(), REAL_CLIP]:
        shutil.copy(src, library / src.name)
    opts = IndexOptions(segment_seconds=1.0, workers=1, batch_size=3, commit_every=4)
    plain = run_index([library], tmp_path / "plain", model=str(tiny_ckpt), options=opts)
    monkeypatch.setattr(indexer.ingest, "ModelFeed", functools.partial(ModelFeed, overlap=True))
    staged = run_index([library], tmp_path / "staged", model=str(tiny_ckpt), options=opts)
    assert staged.to_dict() == plain.to_dict() and staged.segments > 6
    with Index.open(tmp_path / "plain") as a, Index.open(tmp_path / "staged") as b:
        rows_a = {(r["path"], r["seq"]): r["id"] for r in _segments(a)}
        rows_b = {(r["path"], r["seq"]): r["id"] for r in _segments(b)}
        assert rows_a.keys() == rows_b.keys()
        keys = sorted(rows_a)
        va, za = a.snapshot.vectors.gather(np.array([rows_a[k] for k in keys]))
        vb, zb = b.snapshot.vectors.gather(np.array([rows_b[k] for k in keys]))
    assert np.array_equal(va, vb) and np.array_equal(za, zb)


def _segments(index: Any) -> list[dict[str, Any]]:
    hits = index.search("a moving square", top_k=1000, per_video=False, rerank=False, merge=False)
    return [{"path": h.path, "seq": round(h.start, 3), "id": h.segment_id} for h in hits]


def test_float32_keeps_cudnn_convolutions_out_of_tf32(monkeypatch: pytest.MonkeyPatch) -> None:
    from xclip_search.encoder import exact_float32_convolutions

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    exact_float32_convolutions()
    assert torch.backends.cudnn.allow_tf32 is False


def test_batch_size_from_free_memory() -> None:
    assert auto_batch_size(free_bytes=10 << 30, bytes_per_segment=100 << 20, floor=8) == 61  # 0.6 of 10 GiB
    assert auto_batch_size(free_bytes=1 << 30, bytes_per_segment=1 << 30, floor=8) == 8  # never below the floor
    assert auto_batch_size(free_bytes=1 << 40, bytes_per_segment=1 << 20, floor=8) == 256  # capped


def test_autocast_runs_float32_weights_in_bfloat16(checkpoint: Any) -> None:
    import dataclasses

    from xclip_search.encoder import XClipEncoder

    pixels = CropNormalizer(checkpoint.pixels)(
        np.random.default_rng(2).integers(0, 256, size=(2, 8, 32, 32, 3), dtype=np.uint8)
    )
    plain = XClipEncoder(checkpoint)
    mixed = XClipEncoder(dataclasses.replace(checkpoint, dtype=torch.bfloat16))
    assert plain.autocast_dtype is None and mixed.autocast_dtype == torch.bfloat16
    a, b = plain.encode_videos(pixels), mixed.encode_videos(pixels)
    assert b.v.dtype == np.float32 and not np.array_equal(a.v, b.v)
    assert np.abs(a.v - b.v).max() < 0.05  # bfloat16 keeps ~3 significant digits


# -- the nvdec decoder ------------------------------------------------------------------------------------


def test_cpu_mode_decodes_the_frames_pyav_decodes() -> None:
    video, reference = CPU_MODE.open(str(REAL_CLIP)), PyAVDecoder().open(str(REAL_CLIP))
    try:
        assert video.info == reference.info
        idx = [0, 5, 17, video.info.num_frames - 1]
        assert np.array_equal(read_frames(video, idx), read_frames(reference, idx))
    finally:
        video.close()
        reference.close()


class _FakeFrame:
    """A host-memory frame without DLPack: only the plane pointer and size, as NVIDIA's samples read them."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = np.ascontiguousarray(array)

    def framesize(self) -> int:
        return int(self._array.nbytes)

    def GetPtrToPlane(self, plane: int) -> int:  # PyNvVideoCodec's name
        return int(self._array.ctypes.data)


def _fake_nvc(extra_frames: int = 0, dlpack: bool = True) -> types.ModuleType:
    """A stand-in PyNvVideoCodec: SimpleDecoder serves PyAV's frames (numpy arrays export DLPack)."""
    calls: list[list[int]] = []

    class SimpleDecoder:
        def __init__(self, path: str, **kwargs: Any) -> None:
            assert kwargs["use_device_memory"] is False and kwargs["output_color_type"] == "RGB"
            self._video = PyAVDecoder().open(path)

        def __len__(self) -> int:
            return self._video.info.num_frames + extra_frames

        def get_batch_frames_by_index(self, indices: list[int]) -> list[Any]:
            calls.append(list(indices))
            frames = [np.array(f) for f in self._video.iter_frames(indices)]
            return frames if dlpack else [_FakeFrame(f) for f in frames]

    module = types.ModuleType("PyNvVideoCodec")
    module.SimpleDecoder = SimpleDecoder  # type: ignore[attr-defined]
    module.OutputColorType = types.SimpleNamespace(RGB="RGB")  # type: ignore[attr-defined]
    module.calls = calls  # type: ignore[attr-defined]
    return module


@pytest.mark.parametrize("dlpack", [True, False])
def test_gpu_branch_asks_once_per_segment_and_returns_owned_host_frames(
    monkeypatch: pytest.MonkeyPatch, dlpack: bool
) -> None:
    fake = _fake_nvc(dlpack=dlpack)
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", fake)
    video = NvdecDecoder().open(str(REAL_CLIP))
    reference = PyAVDecoder().open(str(REAL_CLIP))
    try:
        idx = [3, 3, 40, 90]
        got = read_frames(video, idx)
        assert fake.calls == [[3, 40, 90]]  # type: ignore[attr-defined]
        assert np.array_equal(got, read_frames(reference, idx))
        with pytest.raises(VideoError, match="out of range"):
            list(video.iter_frames([video.info.num_frames]))
    finally:
        video.close()
        reference.close()


def test_gpu_branch_refuses_a_file_whose_frame_count_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", _fake_nvc(extra_frames=1))
    with pytest.raises(VideoError, match="counts"):
        NvdecDecoder().open(str(REAL_CLIP))


def test_gpu_branch_lifts_the_workers_address_space_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", _fake_nvc())
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 46, hard))
    try:
        NvdecDecoder().open(str(REAL_CLIP)).close()
        assert resource.getrlimit(resource.RLIMIT_AS)[0] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_host_rgb_copies_out_of_the_decoders_buffer_and_checks_its_size() -> None:
    buffer = np.zeros((4, 6, 3), np.uint8)
    for frame in (buffer, _FakeFrame(buffer)):
        out = host_rgb(frame, 4, 6)
        buffer[:] = 7  # the decoder reuses its buffer for the next frame
        assert out.shape == (4, 6, 3) and not out.any()
        buffer[:] = 0
    with pytest.raises(VideoError, match="RGB frame"):
        host_rgb(np.zeros((4, 4, 3), np.uint8), 8, 8)


def test_missing_package_is_one_line_error_before_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", None)  # import fails as when it is not installed
    with pytest.raises(DependencyError, match="PyNvVideoCodec"):
        decoder_chain("nvdec")
    result = CliRunner().invoke(
        cli, ["index", str(REAL_CLIP), "--index", str(tmp_path / "idx"), "--decoder", "nvdec"], catch_exceptions=False
    )
    assert result.exit_code == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith("Error: The nvdec decoder needs PyNvVideoCodec") and first.endswith("(--decoder)")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "idx").exists()


def test_decoder_chain_keeps_the_cpu_decoders_behind() -> None:
    assert decoder_chain("decord") == ("decord", "pyav")
    assert decoder_chain("pyav") == ("pyav",)
    assert get_decoder("indexer.gpudecode:CPU_MODE") is CPU_MODE


def test_index_records_its_decoders(tmp_path: Path, tiny_ckpt: Path) -> None:
    from indexer import IndexOptions, run_index
    from xclip_search.index import Index
    from xclip_search.store.catalog import Catalog

    opts = IndexOptions(workers=1, decoders=("indexer.gpudecode:CPU_MODE", "pyav"))
    report = run_index([str(REAL_CLIP)], tmp_path / "idx", model=str(tiny_ckpt), options=opts)
    assert report.count("indexed") == 1
    catalog = Catalog.open(tmp_path / "idx")
    try:
        assert json.loads(catalog.get_meta("decoders") or "[]") == ["indexer.gpudecode:CPU_MODE"]
    finally:
        catalog.close()
    run_index([str(REAL_CLIP_HD)], tmp_path / "idx", model=str(tiny_ckpt), options=IndexOptions(workers=1))
    with Index.open(tmp_path / "idx") as index:
        # The default (shots, CPU decoders) decodes in one forward PyAV pass (`indexer.shotpass`).
        assert index.info()["decoders"] == ["indexer.gpudecode:CPU_MODE", "pyav"]
