"""The indexing pipeline as a library call: statuses, incremental re-runs, changes, pruning, retries."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from indexer import pipeline
from indexer.pipeline import IndexOptions, run_index
from xclip_search import Index
from xclip_search.errors import IndexMismatchError

from .conftest import REAL_CLIP

OPTS = IndexOptions(segments="fixed", segment_seconds=1.0, workers=1)  # counts below are 1 s windows


def test_mixed_folder_every_file_gets_one_status(tmp_path: Path, tiny_ckpt: Path, library: Path) -> None:
    report = run_index([library], tmp_path / "idx", model=str(tiny_ckpt), options=OPTS)
    by_name = {Path(o.path).name: o for o in report.outcomes}
    assert set(by_name) == {
        "landscape_h264.mp4",
        "portrait_vp9.webm",
        "square_mpeg4.avi",
        "short_mjpeg.mov",
        "bikes.mp4",
        "not_a_video.mp4",
    }  # notes.txt is not a video name: not a candidate
    assert by_name["not_a_video.mp4"].status == "failed"
    assert "not a readable video" in (by_name["not_a_video.mp4"].reason or "")
    assert all(o.status == "indexed" for n, o in by_name.items() if n != "not_a_video.mp4")
    assert by_name["bikes.mp4"].segments == 10  # 10 s at 1 s windows
    assert by_name["short_mjpeg.mov"].segments == 1  # 5 frames: one segment
    assert report.exit_code == 3
    d = report.to_dict()
    assert (d["indexed"], d["failed"], d["unchanged"], d["removed"]) == (5, 1, 0, 0)
    with Index.open(tmp_path / "idx") as index:
        info = index.info()
        assert info["segments"] == d["segments"] and info["videos"]["failed"] == 1
        assert info["ann"]["count"] == d["segments"]
        (fail,) = index.failures()
        assert fail["path"].endswith("not_a_video.mp4")


def test_vp9_that_decord_misreads_falls_back_to_pyav(tmp_path: Path, tiny_ckpt: Path, library: Path) -> None:
    run_index([library / "sub" / "portrait_vp9.webm"], tmp_path / "idx", model=str(tiny_ckpt), options=OPTS)
    with Index.open(tmp_path / "idx") as index:
        row = index.catalog.videos_by_path()[str(library / "sub" / "portrait_vp9.webm")]
    assert row["status"] == "indexed" and row["num_frames"] == 30
    assert "decord" in (row["reason"] or "")  # the note says why PyAV decoded it


def test_rerun_is_incremental_and_does_not_load_the_model(
    tmp_path: Path, tiny_ckpt: Path, library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx = tmp_path / "idx"
    first = run_index([library], idx, model=str(tiny_ckpt), options=OPTS)

    def no_model(*a: object, **k: object) -> None:
        raise AssertionError("the model was loaded for an unchanged library")

    monkeypatch.setattr(pipeline, "load_checkpoint", no_model)
    again = run_index([library], idx, options=OPTS)
    assert again.counts() == {
        "indexed": 0,
        "unchanged": 6,
        "failed": 0,
        "removed": 0,
        "segments": 0,
        "moved": 0,
        "skipped": 0,
        "still_failed": 1,  # not_a_video.mp4: not retried, but still reported
        "still_skipped": 0,
        "sidecars": {"read": 0, "dropped": 0, "cues": 0, "failed": 0},
    }
    still = again.to_dict()["still_failures"]
    assert [Path(f["path"]).name for f in still] == ["not_a_video.mp4"] and still[0]["status"] == "failed"
    assert again.exit_code == 3  # a file under the roots is still failed
    with Index.open(idx) as index:
        assert index.info()["segments"] == first.segments


def test_changed_file_is_reindexed_and_old_segments_retired(tmp_path: Path, tiny_ckpt: Path, library: Path) -> None:
    idx = tmp_path / "idx"
    run_index([library], idx, model=str(tiny_ckpt), options=OPTS)
    target = library / "landscape_h264.mp4"
    shutil.copy(REAL_CLIP, target)  # same name, new content (10 s instead of 2.4 s)
    os.utime(target, ns=(1, 1))
    report = run_index([library], idx, options=OPTS)
    assert report.to_dict()["indexed"] == 1 and report.segments == 10
    with Index.open(idx) as index:
        hits = index.search("anything", top_k=100, per_video=False)
        assert sum(h.path == str(target) for h in hits) == 10
        assert len(hits) == index.info()["segments"]


def test_prune_and_retry_failed(tmp_path: Path, tiny_ckpt: Path, library: Path) -> None:
    idx = tmp_path / "idx"
    run_index([library], idx, model=str(tiny_ckpt), options=OPTS)
    (library / "bikes.mp4").unlink()
    kept = run_index([library], idx, options=OPTS)
    assert kept.to_dict()["removed"] == 0
    pruned = run_index([library], idx, options=IndexOptions(segment_seconds=1.0, workers=1, prune=True))
    assert pruned.to_dict()["removed"] == 1
    with Index.open(idx) as index:
        assert all(h.path != str(library / "bikes.mp4") for h in index.search("bikes", top_k=50, per_video=False))
    retried = run_index([library], idx, options=IndexOptions(segment_seconds=1.0, workers=1, retry_failed=True))
    assert retried.to_dict()["failed"] == 1 and retried.to_dict()["unchanged"] == 4


def test_index_built_by_another_model_is_refused(tmp_path: Path, tiny_ckpt: Path, other_ckpt: Path) -> None:
    idx = tmp_path / "idx"
    run_index([REAL_CLIP], idx, model=str(tiny_ckpt), options=OPTS)
    with pytest.raises(IndexMismatchError):
        run_index([REAL_CLIP], idx, model=str(other_ckpt), options=OPTS)


def test_in_process_and_worker_decoding_give_identical_vectors(tmp_path: Path, tiny_ckpt: Path) -> None:
    import numpy as np

    for name, workers in (("inproc", 0), ("workers", 2)):
        run_index(
            [REAL_CLIP], tmp_path / name, model=str(tiny_ckpt), options=IndexOptions(segment_seconds=2, workers=workers)
        )
    with Index.open(tmp_path / "inproc") as a, Index.open(tmp_path / "workers") as b:
        ids_a = a.catalog.live_segment_ids(a.generation)
        ids_b = b.catalog.live_segment_ids(b.generation)
        va, za = a.snapshot.vectors.gather(ids_a)
        vb, zb = b.snapshot.vectors.gather(ids_b)
    assert np.array_equal(va, vb) and np.array_equal(za, zb)


@pytest.mark.parametrize(
    "case",
    [
        "index is a file",
        "index holds other files",
        "bad catalog URL",
        "batch size 0",
        "float16 on the CPU",
        "Ray shard of 0 files",
    ],
)
def test_bad_arguments_are_refused_before_the_model_loads(
    tmp_path: Path, library: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    from indexer.distributed import RayEncoding, RayOptions
    from xclip_search.errors import XClipSearchError

    def no_model(*a: object, **k: object) -> None:
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(pipeline, "load_checkpoint", no_model)
    monkeypatch.setattr(pipeline, "read_model_shape", no_model)
    idx, opts, encoding = tmp_path / "idx", OPTS, None
    if case == "index is a file":
        idx.write_text("not an index")
    elif case == "index holds other files":
        idx.mkdir()
        (idx / "notes.txt").write_text("mine")
    elif case == "bad catalog URL":
        opts = IndexOptions(catalog_url="bogus://nowhere")
    elif case == "batch size 0":
        opts = IndexOptions(batch_size=0)
    elif case == "float16 on the CPU":
        opts = IndexOptions(device="cpu", dtype="float16")
    else:
        encoding = RayEncoding(RayOptions(files_per_shard=0))
    with pytest.raises(XClipSearchError):
        run_index([library], idx, options=opts, encoding=encoding)
    assert not idx.exists() or idx.is_file() or [p.name for p in idx.iterdir()] in ([], ["notes.txt"])
