"""The store's commit protocol, generations, recovery and corruption detection (no model involved)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xclip_search.checkpoint import ModelIdentity
from xclip_search.errors import IndexBusyError, IndexCorruptError, IndexMismatchError, InvalidArgumentError
from xclip_search.store.catalog import SegmentRecord, VideoRecord
from xclip_search.store.manifest import read_manifest
from xclip_search.store.snapshot import Snapshot
from xclip_search.store.writer import IndexWriter

D, N = 8, 4
IDENTITY = ModelIdentity(
    source="tiny", revision=None, config_hash="abc", num_frames=8, image_size=32, embed_dim=D, num_tokens=N
)


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, D)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def add_video(writer: IndexWriter, path: str, n_segments: int, seed: int) -> tuple[list[int], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    first = writer.reserve_ids(n_segments)
    segs = [
        SegmentRecord(
            seq=i, start_s=i * 10.0, end_s=i * 10.0 + 10, frame_start=i * 250, frame_end=(i + 1) * 250, id=first + i
        )
        for i in range(n_segments)
    ]
    v, z = unit(rng, n_segments), rng.standard_normal((n_segments, N, D)).astype(np.float32)
    writer.add(VideoRecord(path=path, size=1, mtime_ns=seed, status="indexed"), segs, v, z)
    return [s.id for s in segs], v, z


def test_batches_become_generations_and_are_searchable(tmp_path: Path) -> None:
    with IndexWriter(tmp_path, IDENTITY) as w:
        ids_a, v_a, z_a = add_video(w, "/v/a.mp4", 3, seed=1)
        assert w.flush() == 1
        ids_b, v_b, _ = add_video(w, "/v/b.mp4", 2, seed=2)
        assert w.flush() == 2
        w.publish_ann()
    snap = Snapshot.open(tmp_path)
    assert snap.generation == 2 and len(snap.manifest.shards) == 2
    v, z = snap.vectors.gather(np.array(ids_a[::-1]))
    assert np.array_equal(v, v_a[::-1]) and np.array_equal(z, z_a[::-1])
    hits = snap.coarse(v_b[1], 5)
    assert hits[0].segment_id == ids_b[1] and hits[0].coarse_score == pytest.approx(1.0, abs=1e-6)
    assert hits[0].row["path"] == "/v/b.mp4" and len(hits) == 5
    for name in ("ids", "v", "z"):
        np.load(tmp_path / "vectors" / f"{snap.manifest.shards[0].name}.{name}.npy", allow_pickle=False)


def test_readers_stay_on_their_generation_while_a_video_is_replaced(tmp_path: Path) -> None:
    with IndexWriter(tmp_path, IDENTITY) as w:
        old_ids, _, _ = add_video(w, "/v/a.mp4", 2, seed=1)
        w.flush()
        w.publish_ann()
    before = Snapshot.open(tmp_path)
    with IndexWriter(tmp_path, IDENTITY) as w:
        new_ids, v_new, _ = add_video(w, "/v/a.mp4", 1, seed=5)
    after = Snapshot.open(tmp_path)
    assert set(before.catalog.segment_rows(old_ids + new_ids, before.generation)) == set(old_ids)
    assert set(after.catalog.segment_rows(old_ids + new_ids, after.generation)) == set(new_ids)
    # The ANN still holds the retired vectors; the search must not return them.
    assert [c.segment_id for c in after.coarse(v_new[0], 10)] == new_ids


def test_prune_retires_segments(tmp_path: Path) -> None:
    with IndexWriter(tmp_path, IDENTITY) as w:
        _ids, v, _ = add_video(w, "/v/a.mp4", 2, seed=1)
        add_video(w, "/v/b.mp4", 1, seed=2)
    with IndexWriter(tmp_path, IDENTITY) as w:
        w.remove(["/v/a.mp4"])
    snap = Snapshot.open(tmp_path)
    assert all(c.row["path"] == "/v/b.mp4" for c in snap.coarse(v[0], 10))
    assert snap.catalog.status_counts() == {"indexed": 1, "removed": 1}


_CHILD = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from test_store import IDENTITY, add_video
from xclip_search.store.writer import IndexWriter
with IndexWriter(__import__('pathlib').Path({index!r}), IDENTITY) as w:
    add_video(w, "/v/crash.mp4", 2, seed=9)
    w.flush()
    w.publish_ann()
"""


def run_child(index: Path, crash_at: str | None) -> int:
    env = dict(os.environ)
    env.pop("XCLIP_SEARCH_CRASH_AT", None)
    if crash_at:
        env["XCLIP_SEARCH_CRASH_AT"] = crash_at
    code = _CHILD.format(tests=str(Path(__file__).parent), index=str(index))
    return subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode


@pytest.mark.parametrize(
    "step,visible_after_recovery",
    [
        ("shard-written", False),
        ("catalog-committed", True),
        ("manifest-published", True),
        ("ann-built", True),
        ("ann-written", True),
        ("ann-published", True),
    ],
)
def test_crash_at_each_commit_step_loses_nothing_committed(
    tmp_path: Path, step: str, visible_after_recovery: bool
) -> None:
    with IndexWriter(tmp_path, IDENTITY) as w:
        base_ids, _, _ = add_video(w, "/v/base.mp4", 2, seed=1)
        w.flush()
        w.publish_ann()
    assert run_child(tmp_path, step) == 137
    # Readers see a consistent generation even before any recovery.
    snap = Snapshot.open(tmp_path)
    assert set(base_ids) <= set(snap.catalog.segment_rows(base_ids, snap.generation))
    with IndexWriter(tmp_path, IDENTITY) as w:  # recovery: roll forward or clean up
        w.publish_ann()
    snap = Snapshot.open(tmp_path)
    paths = {c.row["path"] for c in snap.coarse(np.ones(D, np.float32) / np.sqrt(D), 10)}
    assert "/v/base.mp4" in paths
    assert ("/v/crash.mp4" in paths) == visible_after_recovery
    leftovers = [p.name for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []
    assert len({s.name for s in snap.manifest.shards}) == len(list((tmp_path / "vectors").glob("*.v.npy")))
    # Running the same batch again adds it exactly once.
    assert run_child(tmp_path, None) == 0
    snap = Snapshot.open(tmp_path)
    assert snap.catalog.live_segment_count(snap.generation) == 4


def test_damaged_manifest_is_refused(tmp_path: Path) -> None:
    with IndexWriter(tmp_path, IDENTITY) as w:
        add_video(w, "/v/a.mp4", 1, seed=1)
    doc = json.loads((tmp_path / "manifest.json").read_text())
    doc["generation"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(IndexCorruptError, match="checksum"):
        read_manifest(tmp_path)


def test_damaged_ann_file_is_detected_not_served(tmp_path: Path) -> None:
    with IndexWriter(tmp_path, IDENTITY) as w:
        add_video(w, "/v/a.mp4", 2, seed=1)
        w.flush()
        info = w.publish_ann()
    assert info is not None
    ann = tmp_path / info.file
    data = bytearray(ann.read_bytes())
    data[-5] ^= 0xFF
    ann.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match="checksum") as err:
        Snapshot.open(tmp_path)
    assert "reindex" in (err.value.hint or "")
    with IndexWriter(tmp_path, IDENTITY) as w:
        w.publish_ann(force=True)
    assert Snapshot.open(tmp_path).ann_index().ntotal == 2


def test_truncated_shard_is_detected(tmp_path: Path) -> None:
    with IndexWriter(tmp_path, IDENTITY) as w:
        add_video(w, "/v/a.mp4", 3, seed=1)
    z_file = next((tmp_path / "vectors").glob("*.z.npy"))
    z_file.write_bytes(z_file.read_bytes()[:200])
    with pytest.raises(IndexCorruptError):
        Snapshot.open(tmp_path)


def test_other_model_is_refused(tmp_path: Path) -> None:
    with IndexWriter(tmp_path, IDENTITY) as w:
        add_video(w, "/v/a.mp4", 1, seed=1)
    other = ModelIdentity(**{**IDENTITY.to_dict(), "config_hash": "zzz"})
    with pytest.raises(IndexMismatchError), IndexWriter(tmp_path, other):
        pass


def test_second_writer_is_refused_while_one_writes(tmp_path: Path) -> None:
    with IndexWriter(tmp_path, IDENTITY), pytest.raises(IndexBusyError), IndexWriter(tmp_path, IDENTITY):
        pass


def test_foreign_directory_is_not_taken_over(tmp_path: Path) -> None:
    (tmp_path / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(InvalidArgumentError, match="not an xclip-search index"), IndexWriter(tmp_path, IDENTITY):
        pass
