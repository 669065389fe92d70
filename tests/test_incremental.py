"""Re-runs: unchanged files cost a stat, moved files keep their vectors, changed files are re-encoded."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from indexer import pipeline
from indexer.pipeline import IndexOptions, run_index
from xclip_search import Index
from xclip_search.store.manifest import read_manifest

from .conftest import REAL_CLIP

OPTS = IndexOptions(segment_seconds=2.0, workers=1)


@pytest.fixture()
def lib(tmp_path: Path, generated_videos: dict[str, Path]) -> Path:
    root = tmp_path / "lib"
    (root / "a").mkdir(parents=True)
    shutil.copy(REAL_CLIP, root / "a" / "bikes.mp4")
    shutil.copy(generated_videos["landscape_h264.mp4"], root / "a" / "landscape.mp4")
    shutil.copy(generated_videos["square_mpeg4.avi"], root / "square.avi")
    return root


def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("the model was loaded although nothing needed encoding")

    monkeypatch.setattr(pipeline, "load_checkpoint", refuse)


def segments_by_path(index_dir: Path) -> dict[str, list[int]]:
    with Index.open(index_dir) as index:
        ids = index.catalog.live_segment_ids(index.generation).tolist()
        rows = index.catalog.segment_rows(ids, index.generation)
    out: dict[str, list[int]] = {}
    for seg_id, row in sorted(rows.items()):
        out.setdefault(row["path"], []).append(seg_id)
    return out


def test_unchanged_library_writes_nothing_and_loads_no_model(
    tmp_path: Path, tiny_ckpt: Path, lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx = tmp_path / "idx"
    run_index([lib], idx, model=str(tiny_ckpt), options=OPTS)
    generation = read_manifest(idx).generation
    no_model(monkeypatch)
    again = run_index([lib], idx, model=str(tiny_ckpt), options=OPTS)  # the same --model as a nightly job passes
    assert again.to_dict()["unchanged"] == 3 and again.count("indexed") == 0
    assert read_manifest(idx).generation == generation


def test_rename_and_move_keep_the_vectors(
    tmp_path: Path, tiny_ckpt: Path, lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx = tmp_path / "idx"
    run_index([lib], idx, model=str(tiny_ckpt), options=OPTS)
    before = segments_by_path(idx)
    (lib / "b").mkdir()
    os.rename(lib / "a" / "bikes.mp4", lib / "b" / "renamed.mp4")  # same inode: a rename
    # A move across filesystems: a new inode with the same bytes (and stamps), the old file deleted.
    shutil.copy2(lib / "a" / "landscape.mp4", lib / "b" / "copied.mp4")
    (lib / "a" / "landscape.mp4").unlink()
    no_model(monkeypatch)
    report = run_index([lib], idx, options=IndexOptions(segment_seconds=2.0, workers=1, prune=True))
    assert report.counts() == {
        "indexed": 0,
        "unchanged": 1,
        "failed": 0,
        "removed": 0,
        "segments": 0,
        "moved": 2,
        "skipped": 0,
        "still_failed": 0,
        "still_skipped": 0,
        "sidecars": {"read": 0, "dropped": 0, "cues": 0, "failed": 0},
    }
    assert sorted((m["from"], m["to"]) for m in report.to_dict()["moves"]) == [
        (str(lib / "a" / "bikes.mp4"), str(lib / "b" / "renamed.mp4")),
        (str(lib / "a" / "landscape.mp4"), str(lib / "b" / "copied.mp4")),
    ]
    after = segments_by_path(idx)
    assert after[str(lib / "b" / "renamed.mp4")] == before[str(lib / "a" / "bikes.mp4")]
    assert after[str(lib / "b" / "copied.mp4")] == before[str(lib / "a" / "landscape.mp4")]
    assert str(lib / "a" / "bikes.mp4") not in after
    with Index.open(idx) as index:
        paths = {h.path for h in index.search("bikes", top_k=50, per_video=False)}
        rows = index.catalog.videos_by_path()
    assert str(lib / "b" / "renamed.mp4") in paths and str(lib / "a" / "bikes.mp4") not in paths
    assert rows[str(lib / "b" / "copied.mp4")]["status"] == "indexed"
    assert all(r["status"] != "removed" for r in rows.values())


def test_touched_file_is_recognised_by_content_and_not_reencoded(
    tmp_path: Path, tiny_ckpt: Path, lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx = tmp_path / "idx"
    run_index([lib], idx, model=str(tiny_ckpt), options=OPTS)
    before = segments_by_path(idx)
    os.utime(lib / "square.avi", ns=(10**18, 10**18))
    no_model(monkeypatch)
    report = run_index([lib], idx, options=OPTS)
    assert report.to_dict()["unchanged"] == 3 and report.to_dict()["indexed"] == 0
    assert segments_by_path(idx) == before
    generation = read_manifest(idx).generation
    assert run_index([lib], idx, options=OPTS).to_dict()["unchanged"] == 3  # stamps refreshed: no hashing again
    assert read_manifest(idx).generation == generation


def test_changed_content_of_the_same_size_is_reencoded(tmp_path: Path, tiny_ckpt: Path, lib: Path) -> None:
    idx = tmp_path / "idx"
    run_index([lib], idx, model=str(tiny_ckpt), options=OPTS)
    before = segments_by_path(idx)
    target = lib / "a" / "bikes.mp4"
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[-1000] ^= 0xFF  # same size and inode, one sampled block differs: the hash decides
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    report = run_index([lib], idx, options=OPTS)
    assert report.to_dict()["indexed"] == 1
    after = segments_by_path(idx)
    assert set(after[str(target)]).isdisjoint(before[str(target)])


def test_retry_failed_retries_only_failed_files(tmp_path: Path, tiny_ckpt: Path, lib: Path) -> None:
    idx = tmp_path / "idx"
    (lib / "broken.mp4").write_bytes(b"\x00" * 4096)
    first = run_index([lib], idx, model=str(tiny_ckpt), options=OPTS)
    assert first.to_dict()["failed"] == 1
    retried = run_index([lib], idx, options=IndexOptions(segment_seconds=2.0, workers=1, retry_failed=True))
    assert retried.counts() == {
        "indexed": 0,
        "unchanged": 3,
        "failed": 1,
        "removed": 0,
        "segments": 0,
        "moved": 0,
        "skipped": 0,
        "still_failed": 0,  # retried: it failed *now*, not still from before
        "still_skipped": 0,
        "sidecars": {"read": 0, "dropped": 0, "cues": 0, "failed": 0},
    }
    (lib / "broken.mp4").write_bytes(REAL_CLIP.read_bytes())  # fixed: changed, so indexed without asking
    assert run_index([lib], idx, options=OPTS).to_dict()["indexed"] == 1


def test_hard_links_and_aliases_are_indexed_once(tmp_path: Path, tiny_ckpt: Path, lib: Path) -> None:
    os.link(lib / "square.avi", lib / "a" / "hardlink.avi")
    os.symlink(lib / "a", lib / "alias")
    report = run_index([lib], tmp_path / "idx", model=str(tiny_ckpt), options=OPTS)
    d = report.to_dict()
    assert d["indexed"] == 3 and d["skipped"] == 1 and report.exit_code == 0
    (dup,) = [o for o in report.outcomes if o.status == "skipped"]
    assert "same file as" in (dup.reason or "")
