"""The pieces of ``index --ray`` that need no Ray: shards written by another process and committed by the one
writer, decode workers that outlive a pool run, and a single-machine path that never imports Ray."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from indexer.extract import ExtractSpec
from indexer.modelspec import read_model_shape
from indexer.pool import DecodePool, FileDone, FileFailed
from xclip_search.checkpoint import ModelIdentity
from xclip_search.store.catalog import BatchEntry, SegmentRecord, VideoRecord
from xclip_search.store.manifest import read_manifest
from xclip_search.store.snapshot import Snapshot
from xclip_search.store.vectors import VectorStore
from xclip_search.store.writer import IndexWriter

from .conftest import REAL_CLIP

IDENTITY = ModelIdentity(
    source="/models/tiny",
    revision=None,
    config_hash="abc",
    num_frames=8,
    image_size=32,
    embed_dim=8,
    num_tokens=4,
)


def entry(path: str, rows: list[int], first_id: int) -> BatchEntry:
    segs = [SegmentRecord(seq=k, start_s=k, end_s=k + 1.0, frame_start=k, frame_end=k + 1) for k in range(len(rows))]
    for k, (s, row) in enumerate(zip(segs, rows, strict=True)):
        s.id, s.row = first_id + k, row
    return BatchEntry(VideoRecord(path=path, size=1, mtime_ns=1, status="indexed"), segs)


@contextmanager
def snapshot(index_dir: Path) -> Iterator[Snapshot]:
    snap = Snapshot.open(index_dir)
    try:
        yield snap
    finally:
        snap.vectors.close()
        snap.catalog.close()


def parts_on_disk(index_dir: Path) -> list[str]:
    return sorted(p.name for p in (index_dir / "vectors").glob("*.npy"))


def test_a_shard_written_elsewhere_is_committed_and_readable(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    v = rng.standard_normal((3, 8)).astype(np.float32)
    z = rng.standard_normal((3, 4, 8)).astype(np.float32)
    idx = tmp_path / "idx"
    with IndexWriter(idx, IDENTITY) as writer:
        parts = VectorStore(idx).write_parts(v, z)  # as a worker would, while the writer holds the lock
        first = writer.reserve_ids(3)
        # Two videos; the second's segment sits in row 0: ids follow the rows each segment names.
        writer.record(VideoRecord(path="/lib/broken.mp4", size=1, mtime_ns=1, status="failed", reason="bad"))
        generation = writer.commit_written(
            parts, [entry("/lib/a.mp4", [1, 2], first), entry("/lib/b.mp4", [0], first + 2)]
        )
    manifest = read_manifest(idx)
    assert manifest.generation == generation == 1
    assert [s.name for s in manifest.shards] == [parts.name]
    with snapshot(idx) as snap:
        got_v, got_z = snap.vectors.gather(np.array([first, first + 1, first + 2]))
        np.testing.assert_array_equal(got_v, v[[1, 2, 0]])
        np.testing.assert_array_equal(got_z, z[[1, 2, 0]])
        assert snap.catalog.status_counts() == {"indexed": 2, "failed": 1}


def test_rows_must_be_covered_once(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    v, z = np.ones((2, 8), np.float32), np.ones((2, 4, 8), np.float32)
    with IndexWriter(idx, IDENTITY) as writer:
        parts = VectorStore(idx).write_parts(v, z)
        with pytest.raises(ValueError, match="rows no segment"):
            writer.commit_written(parts, [entry("/lib/a.mp4", [0], 1)])
        with pytest.raises(ValueError, match="given twice"):
            writer.commit_written(parts, [entry("/lib/a.mp4", [0, 0], 1)])


def test_uncommitted_worker_shards_are_removed_by_the_next_writer(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    v, z = np.ones((2, 8), np.float32), np.ones((2, 4, 8), np.float32)
    with IndexWriter(idx, IDENTITY) as writer:
        kept = VectorStore(idx).write_parts(v, z)
        writer.commit_written(kept, [entry("/lib/a.mp4", [0, 1], writer.reserve_ids(2))])
        VectorStore(idx).write_parts(v, z)  # a worker's shard whose commit never came (the driver died)
    assert len(parts_on_disk(idx)) == 6  # ids, v, z and the row hashes (rowhash); v and z of the lost one
    with IndexWriter(idx, IDENTITY):
        pass
    assert parts_on_disk(idx) == sorted(f"{kept.name}.{p}.npy" for p in ("ids", "v", "z", "rowhash"))


def test_decode_workers_survive_from_one_run_to_the_next(tiny_ckpt: Path) -> None:
    """Workers die with the thread that started them (PR_SET_PDEATHSIG); each run has its own thread."""
    shape = read_model_shape(str(tiny_ckpt), None)
    spec = ExtractSpec(num_frames=shape.num_frames, pixels=shape.pixels, segment_seconds=5.0)
    with DecodePool(spec, 1) as pool:
        pids = []
        for _ in range(3):
            events = list(pool.run([str(REAL_CLIP)]))
            assert isinstance(events[-1], FileDone), events[-1]
            assert not any(isinstance(e, FileFailed) for e in events)
            pids.append([w.proc.pid for w in pool._live])
        assert len(pids[0]) == 1 and pids[0] == pids[1] == pids[2]


def test_warm_up_starts_every_worker_and_a_run_reuses_them(tiny_ckpt: Path) -> None:
    shape = read_model_shape(str(tiny_ckpt), None)
    spec = ExtractSpec(num_frames=shape.num_frames, pixels=shape.pixels, segment_seconds=5.0)
    with DecodePool(spec, 2) as pool:
        pool.warm_up()
        warm = sorted(w.proc.pid for w in pool._live)
        assert len(warm) == 2 and all(w.ready for w in pool._live)
        events = list(pool.run([str(REAL_CLIP)]))
        assert isinstance(events[-1], FileDone), events[-1]
        assert set(w.proc.pid for w in pool._live) <= set(warm)


def test_single_machine_index_does_not_import_ray(tmp_path: Path, tiny_ckpt: Path) -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from xclip_search.cli import cli\n"
        "r = CliRunner().invoke(cli, ['index', sys.argv[1], '--index', sys.argv[2], '--model', sys.argv[3],"
        " '--workers', '0', '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(REAL_CLIP), str(tmp_path / "idx"), str(tiny_ckpt)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_file_another_writer_committed_meanwhile_is_dropped_from_a_written_shard(tmp_path: Path) -> None:
    """Two indexers sharing a catalog both picked up a.mp4; the Ray committer comes second and drops its copy."""
    rng = np.random.default_rng(1)
    idx = tmp_path / "idx"
    v_a, z_a = rng.standard_normal((1, 8)).astype(np.float32), rng.standard_normal((1, 4, 8)).astype(np.float32)
    with IndexWriter(idx, IDENTITY) as other:
        a = entry("/lib/a.mp4", [0], other.reserve_ids(1))
        other.add(a.video, a.segments, v_a, z_a)
        other.flush()
    a_id = a.segments[0].id
    v, z = rng.standard_normal((3, 8)).astype(np.float32), rng.standard_normal((3, 4, 8)).astype(np.float32)
    with IndexWriter(idx, IDENTITY) as writer:
        parts = VectorStore(idx).write_parts(v, z)
        first = writer.reserve_ids(3)
        writer.commit_written(parts, [entry("/lib/a.mp4", [0], first), entry("/lib/b.mp4", [2, 1], first + 1)])
        assert writer.dropped == ["/lib/a.mp4"]
    assert parts.name not in {s.name for s in read_manifest(idx).shards}
    assert not [p for p in parts_on_disk(idx) if p.startswith(parts.name)]
    with snapshot(idx) as snap:
        assert sorted(int(i) for i in snap.live_ids()) == [a_id, first + 1, first + 2]
        got_v, got_z = snap.vectors.gather(np.array([a_id, first + 1, first + 2]))
        np.testing.assert_array_equal(got_v, np.concatenate([v_a, v[[2, 1]]]))
        np.testing.assert_array_equal(got_z, np.concatenate([z_a, z[[2, 1]]]))
        assert snap.catalog.status_counts() == {"indexed": 2}


def test_a_written_shard_whose_files_were_all_committed_elsewhere_adds_no_shard(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    v, z = np.ones((1, 8), np.float32), np.ones((1, 4, 8), np.float32)
    with IndexWriter(idx, IDENTITY) as other:
        a = entry("/lib/a.mp4", [0], other.reserve_ids(1))
        other.add(a.video, a.segments, v, z)
        other.flush()
    shards = read_manifest(idx).shards
    with IndexWriter(idx, IDENTITY) as writer:
        parts = VectorStore(idx).write_parts(v * 2, z * 2)
        writer.record(VideoRecord(path="/lib/broken.mp4", size=1, mtime_ns=1, status="failed", reason="bad"))
        writer.commit_written(parts, [entry("/lib/a.mp4", [0], writer.reserve_ids(1))])
    manifest = read_manifest(idx)
    assert manifest.shards == shards and manifest.generation == 2
    assert not [p for p in parts_on_disk(idx) if p.startswith(parts.name)]


def test_a_file_result_crosses_the_ray_stages_unchanged(tmp_path: Path, tiny_ckpt: Path) -> None:
    """DecodeStage's outcome, with the shard EmbedStage adds, reaches the committer as it was (JSON in a row)."""
    from indexer.raystages import DecodeStage, FileResult

    shape = read_model_shape(str(tiny_ckpt))
    stage = DecodeStage(ExtractSpec(num_frames=shape.num_frames, pixels=shape.pixels, segment_seconds=2.0).to_dict())
    try:
        result, crops = stage.decode(str(REAL_CLIP))
        broken = tmp_path / "broken.mp4"
        broken.write_bytes(b"\x00" * 1024)
        failed, none = stage.decode(str(broken))
    finally:
        stage.pool.close()
    assert result.indexed and result.summary is not None and len(result.plans) == result.summary.segments
    assert crops.shape[0] == len(result.plans) and none.shape[0] == 0
    assert failed.status == "failed" and failed.reason and failed.content_hash
    parts = VectorStore(tmp_path).write_parts(np.zeros((3, 4), np.float32), np.zeros((3, 2, 4), np.float32))
    result.shard, result.shard_files, result.row = parts, 2, 1
    for r in (result, failed):
        assert FileResult.from_json(r.to_json()) == r
