"""Worker isolation with injected faults: a hang, segfault, abort, exit or memory bomb costs one file only.

The faults come from `tests/faulty_decoder.py`, a decoder chosen per file name, loaded in the workers by
its ``module:attribute`` name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from indexer.extract import ExtractSpec
from indexer.pipeline import IndexOptions, run_index
from indexer.pool import DecodePool, FileDone, FileFailed, SegmentReady, WorkerStartError
from indexer.probe import Limits
from xclip_search import Index
from xclip_search.pixels import PixelConfig

from .conftest import REAL_CLIP

FAULTY = ("tests.faulty_decoder:FAULTY",)
PIXELS = PixelConfig.from_preprocessor_dict(
    {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}, image_size=32
)
FAULT_TIMEOUT_S = 8.0
EXPECTED = {
    "hang.mp4": "timed out",
    "segv.mp4": "SIGSEGV",
    "abort.mp4": "SIGABRT",
    "exit.mp4": "exited with status 7",
    "oom.mp4": "out of memory",
}


@pytest.fixture()
def faulty_library(tmp_path: Path) -> Path:
    lib = tmp_path / "faults"
    lib.mkdir()
    for name in [*EXPECTED, "good1.mp4", "good2.mp4", "slowseg.mp4"]:
        shutil.copy(REAL_CLIP, lib / name)
    return lib


def test_each_fault_costs_its_file_only(faulty_library: Path) -> None:
    spec = ExtractSpec(num_frames=8, pixels=PIXELS, segment_seconds=2.0, decoders=FAULTY)
    files = sorted(str(p) for p in faulty_library.iterdir())
    segments: dict[str, int] = {}
    results: dict[str, FileDone | FileFailed] = {}
    # 8 s without progress: long enough that the memory hog reaches its limit first even on a starved CI
    # machine (it was seen timing out at 3 s under heavy load), short enough for the hang to cost little.
    with DecodePool(spec, 2, timeout_s=FAULT_TIMEOUT_S, memory_mb=768) as pool:
        for event in pool.run(files):
            name = Path(event.path).name
            if isinstance(event, SegmentReady):
                segments[name] = segments.get(name, 0) + 1
                assert event.crops.shape == (8, 32, 32, 3)
            else:
                assert name not in results, "one final event per file"
                results[name] = event
    assert set(results) == {Path(f).name for f in files}
    for name, words in EXPECTED.items():
        event = results[name]
        assert isinstance(event, FileFailed) and event.status == "failed", name
        assert words in event.reason, (name, event.reason)
    for name in ("good1.mp4", "good2.mp4", "slowseg.mp4"):  # slowseg: slow but making progress, not killed
        event = results[name]
        assert isinstance(event, FileDone), (name, event)
        assert event.summary is not None and event.summary.segments == segments[name] == 5
        assert event.content_hash and event.probe is not None and event.probe.width == 640


def test_a_slow_file_that_makes_progress_is_not_killed(tmp_path: Path) -> None:
    """8 frames at 0.6 s each: one segment takes longer than the 3 s timeout, but every frame is progress."""
    shutil.copy(REAL_CLIP, tmp_path / "crawl.mp4")
    spec = ExtractSpec(num_frames=8, pixels=PIXELS, segment_seconds=0, decoders=FAULTY)
    with DecodePool(spec, 1, timeout_s=3.0) as pool:
        *segments, last = list(pool.run([str(tmp_path / "crawl.mp4")]))
    assert isinstance(last, FileDone) and len(segments) == 1


def test_the_memory_limit_holds_inside_the_worker(tmp_path: Path) -> None:
    shutil.copy(REAL_CLIP, tmp_path / "oom.mp4")
    spec = ExtractSpec(num_frames=8, pixels=PIXELS, decoders=FAULTY)
    with DecodePool(spec, 1, timeout_s=30.0, memory_mb=512) as pool:
        (event,) = list(pool.run([str(tmp_path / "oom.mp4")]))
    assert isinstance(event, FileFailed) and event.reason == "out of memory (worker limit 512 MB)"


def test_workers_that_cannot_start_stop_the_run_with_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ExtractSpec(num_frames=8, pixels=PIXELS)
    pool = DecodePool(spec, 1)
    monkeypatch.setattr(pool, "_env", lambda: {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONHOME": "/nowhere"})
    with pool, pytest.raises(WorkerStartError, match="cannot start"):
        list(pool.run([str(REAL_CLIP)]))


def test_an_indexing_run_survives_every_fault_and_records_each_reason(
    tmp_path: Path, tiny_ckpt: Path, faulty_library: Path
) -> None:
    idx = tmp_path / "idx"
    opts = IndexOptions(
        segments="fixed", segment_seconds=2.0, workers=2, timeout_s=FAULT_TIMEOUT_S, memory_mb=768, decoders=FAULTY
    )
    report = run_index([faulty_library], idx, model=str(tiny_ckpt), options=opts)
    by_name = {Path(o.path).name: o for o in report.outcomes}
    assert report.exit_code == 3
    assert report.to_dict()["indexed"] == 3 and report.to_dict()["failed"] == len(EXPECTED)
    for name, words in EXPECTED.items():
        assert by_name[name].status == "failed" and words in (by_name[name].reason or "")
    with Index.open(idx) as index:
        failures = {Path(f["path"]).name: f for f in index.failures()}
        assert set(failures) == set(EXPECTED)
        assert "SIGSEGV" in failures["segv.mp4"]["reason"]
        hits = index.search("anything", top_k=100, per_video=False)
        assert {Path(h.path).name for h in hits} == {"good1.mp4", "good2.mp4", "slowseg.mp4"}
        assert len(hits) == 15
    # Nothing changed: the failed files are not retried (or re-decoded) unless asked.
    again = run_index([faulty_library], idx, options=opts)
    assert again.to_dict()["unchanged"] == 8 and again.still_failed == len(EXPECTED) and again.exit_code == 3


def test_over_the_limit_files_are_skipped_and_decoder_warnings_counted(tmp_path: Path, tiny_ckpt: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(REAL_CLIP, lib / "ok.mp4")
    data = bytearray(REAL_CLIP.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 20000, 7):
        data[i] ^= 0x55
    (lib / "damaged.mp4").write_bytes(bytes(data))
    opts = IndexOptions(segment_seconds=0, workers=1)
    report = run_index([lib], tmp_path / "idx", model=str(tiny_ckpt), options=opts)
    assert report.exit_code == 0
    with Index.open(tmp_path / "idx") as index:
        rows = index.catalog.videos_by_path()
    damaged = rows[str(lib / "damaged.mp4")]
    assert damaged["status"] == "indexed" and damaged["warnings"] > 0
    assert "decord" in damaged["reason"] and "decoder warning" in damaged["reason"]
    assert rows[str(lib / "ok.mp4")]["warnings"] == 0

    small = IndexOptions(segment_seconds=0, workers=1, limits=Limits(max_pixels=320 * 240))
    (lib / "later.mp4").write_bytes(REAL_CLIP.read_bytes())
    report = run_index([lib], tmp_path / "idx", options=small)
    (later,) = [o for o in report.outcomes if o.path.endswith("later.mp4")]
    assert later.status == "skipped" and "exceeds the limit" in (later.reason or "")
    assert report.exit_code == 0
