"""Compaction: same answers after it (and as a fresh index), files reclaimed after the grace, an older reader keeps
answering, damaged rows never copied, the policy's triggers, and kill -9 at each of its commit steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from xclip_search import Index
from xclip_search.checkpoint import ModelIdentity
from xclip_search.cli import cli
from xclip_search.errors import ShardCorruptError
from xclip_search.store import compaction
from xclip_search.store.compaction import CompactionPolicy
from xclip_search.store.manifest import read_manifest
from xclip_search.store.snapshot import Snapshot
from xclip_search.store.writer import IndexWriter

from .synthetic import Video, clustered_videos, one_faiss_thread, unit, write_videos

__all__ = ["one_faiss_thread"]  # an autouse fixture: imported to apply to this module
QUERIES = ("a person riding a bike", "a dog on a beach")
D, N = 16, 4
SYNTH = ModelIdentity(
    source="synthetic", revision=None, config_hash="compact", num_frames=8, image_size=32, embed_dim=D, num_tokens=N
)
NOW = CompactionPolicy(grace_s=0.0)


def churn(directory: Path, identity: ModelIdentity, videos: list[Video], seed: int) -> list[Video]:
    """Prune a third of `videos`, replace a sixth with new vectors, add a few: the final library."""
    rng = np.random.default_rng(seed)
    gone = [v for i, v in enumerate(videos) if i % 3 == 0]
    changed = [v for i, v in enumerate(videos) if i % 6 == 1]
    for v in changed:  # one segment fewer: another size, so the writer sees a changed file
        v.v = unit(v.v[:-1] + 0.3 * rng.standard_normal(v.v[:-1].shape))
        v.z = rng.standard_normal(v.z[:-1].shape).astype(np.float32)
    added = clustered_videos(identity, 4, segments=3, seed=seed + 100, prefix="/lib/new")
    with IndexWriter(directory, identity) as writer:
        writer.remove([v.path for v in gone])
    write_videos(directory, identity, [*changed, *added], flush_every=6, ann=None)
    return [v for v in videos if v not in gone] + added


def hits(index: Index) -> list[tuple[str, float, float, float]]:
    out = []
    for q in QUERIES:
        out += [(h.path, h.start, h.end, round(h.score, 6)) for h in index.search(q, top_k=10)]
    return out


def vector_files(directory: Path) -> set[str]:
    return {p.name.split(".", 1)[0] for p in (directory / "vectors").glob("*.npy")}


def test_compaction_answers_like_before_and_like_a_fresh_index(  # type: ignore[no-untyped-def]
    tmp_path: Path, checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = checkpoint.identity
    idx = tmp_path / "idx"
    videos = clustered_videos(identity, 24, segments=3, seed=5)
    write_videos(idx, identity, videos, flush_every=9, ann="flat")
    final = churn(idx, identity, videos, seed=6)
    with Index.open(idx, device="cpu") as index:
        before = hits(index)
        info = index.info()["compaction"]
    assert info["dead_rows"] > 0 and info["reclaimable_bytes"] > 0
    shards_before = set(vector_files(idx))
    with Index.open(idx, device="cpu") as old_reader:  # a reader on the generation before the compaction
        with IndexWriter(idx, identity) as writer:
            row_bytes = 4 * identity.embed_dim * (1 + identity.num_tokens)
            report = writer.compact(CompactionPolicy(grace_s=60.0, shard_bytes=20 * row_bytes), force=True)
            writer.publish_ann()
        assert report.compacted and report.rows_dropped == info["dead_rows"] and report.files_deleted == 0
        assert report.shards_after == -(-info["live_rows"] // 20)  # streamed into shards of 20 rows
        assert old_reader.generation < report.generation
        assert hits(old_reader) == before  # its shard files are retired, not deleted: it keeps answering
    manifest = read_manifest(idx)
    assert manifest.ann is not None and manifest.ann.generation == manifest.generation
    with Index.open(idx, device="cpu") as index:
        assert hits(index) == before
        after = index.info()["compaction"]
    assert after["dead_rows"] == 0 and after["reclaimable_bytes"] == 0 and after["live_rows"] == info["live_rows"]
    later = compaction.time.time() + 61
    monkeypatch.setattr(compaction.time, "time", lambda: later)
    with IndexWriter(idx, identity):
        pass  # the first writer after the grace deletes the retired files
    assert vector_files(idx) == {s.name for s in manifest.shards}  # old files reclaimed, nothing else left
    assert not shards_before & vector_files(idx)
    fresh = tmp_path / "fresh"
    write_videos(fresh, identity, final, ann="flat")
    with Index.open(fresh, device="cpu") as index:
        assert sorted(hits(index)) == sorted(before)
    size = sum(p.stat().st_size for p in (idx / "vectors").iterdir())
    fresh_size = sum(p.stat().st_size for p in (fresh / "vectors").iterdir())
    assert size <= 1.05 * fresh_size


def test_retired_files_stay_for_the_grace_then_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    idx = tmp_path / "idx"
    videos = clustered_videos(SYNTH, 12, segments=2, seed=1)
    write_videos(idx, SYNTH, videos, flush_every=6)
    with IndexWriter(idx, SYNTH) as writer:
        writer.remove([videos[0].path])
    old = {s.name for s in read_manifest(idx).shards}
    with IndexWriter(idx, SYNTH) as writer:
        report = writer.compact(CompactionPolicy(grace_s=60.0), force=True)
    assert report.compacted and report.files_deleted == 0
    assert old <= vector_files(idx)  # kept for readers on the older generation
    with IndexWriter(idx, SYNTH):
        pass  # a writer within the grace deletes nothing
    assert old <= vector_files(idx)
    with Index.open(idx) as index:
        assert index.info()["compaction"]["retired_bytes"] > 0
    later = compaction.time.time() + 61
    monkeypatch.setattr(compaction.time, "time", lambda: later)
    with IndexWriter(idx, SYNTH):
        pass
    assert vector_files(idx) == {s.name for s in read_manifest(idx).shards}
    with Index.open(idx) as index:
        assert index.info()["compaction"]["retired_bytes"] == 0


def test_policy_triggers(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    videos = clustered_videos(SYNTH, 20, segments=2, seed=2)
    write_videos(idx, SYNTH, videos, flush_every=40)  # one shard of 40 rows
    with IndexWriter(idx, SYNTH) as writer:
        writer.remove([videos[0].path, videos[1].path])  # 4 of 40 rows dead: under 20%
        assert not compaction.maybe_compact(writer, NOW).compacted  # type: ignore[union-attr]
        assert compaction.maybe_compact(writer, None) is None
        writer.remove([v.path for v in videos[2:6]])  # 12 of 40
        report = compaction.maybe_compact(writer, NOW)
        assert report is not None and report.compacted and "dead" in report.reason
        assert report.rows_copied == 28 and len(writer.manifest.shards) == 1
    write_videos(idx, SYNTH, clustered_videos(SYNTH, 5, segments=2, seed=3, prefix="/more"), flush_every=2, ann=None)
    with IndexWriter(idx, SYNTH) as writer:
        assert len(writer.manifest.shards) == 6
        report = compaction.maybe_compact(writer, CompactionPolicy(max_small_shards=3, grace_s=0))
        assert report is not None and report.compacted and "small shards" in report.reason
        assert len(writer.manifest.shards) == 1 and writer.manifest.vector_count == 38
        assert not writer.compact(NOW, force=True).compacted  # one whole shard: nothing to gain


def test_a_damaged_row_is_never_copied(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    videos = clustered_videos(SYNTH, 10, segments=2, seed=4)
    write_videos(idx, SYNTH, videos)
    with IndexWriter(idx, SYNTH) as writer:
        writer.remove([videos[0].path])
    manifest = read_manifest(idx)
    path = idx / "vectors" / f"{manifest.shards[0].name}.v.npy"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40  # a live row (the last video's)
    path.write_bytes(bytes(data))
    with IndexWriter(idx, SYNTH) as writer:
        with pytest.raises(ShardCorruptError, match="damaged") as caught:
            writer.compact(NOW, force=True)
        assert "verify --repair" in str(caught.value.hint)
        eager = CompactionPolicy(dead_fraction=0.05, grace_s=0.0)
        assert compaction.maybe_compact(writer, eager) is None  # an index run warns and goes on
    assert read_manifest(idx) == manifest and vector_files(idx) == {manifest.shards[0].name}


def test_compact_command(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    videos = clustered_videos(SYNTH, 10, segments=2, seed=8)
    write_videos(idx, SYNTH, videos, flush_every=4)
    with IndexWriter(idx, SYNTH) as writer:
        writer.remove([videos[0].path])
    result = CliRunner().invoke(cli, ["compact", "--index", str(idx), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["compacted"] and doc["rows_dropped"] == 2 and doc["rows_copied"] == 18 and doc["shards_after"] == 1
    result = CliRunner().invoke(cli, ["info", "--index", str(idx)], catch_exceptions=False)
    assert "18 live, 0 dead in 1 shards" in result.output and "retired" in result.output
    result = CliRunner().invoke(cli, ["compact", "--index", str(idx)], catch_exceptions=False)
    assert result.exit_code == 0 and "Nothing to compact" in result.output
    again = CliRunner().invoke(cli, ["compact", "--index", str(idx), "--json"], catch_exceptions=False)
    doc = json.loads(again.output)  # asked for, but one whole shard: the reason says why nothing happened
    assert not doc["compacted"] and doc["reason"] == "nothing to compact"


# -- crash safety ---------------------------------------------------------------------------------------------


def contents(idx: Path) -> dict[int, tuple[bytes, bytes]]:
    """Every live segment's v and Z bytes, read through a fresh snapshot (and its row checks)."""
    snap = Snapshot.open(idx)
    try:
        ids = snap.live_ids()
        v, z = snap.vectors.gather(ids)
        return {int(i): (v[k].tobytes(), z[k].tobytes()) for k, i in enumerate(ids)}
    finally:
        snap.catalog.close()


def compact_cli(idx: Path, crash_at: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "XCLIP_SEARCH_CRASH_AT"}
    if crash_at:
        env["XCLIP_SEARCH_CRASH_AT"] = crash_at
    cmd = [sys.executable, "-m", "xclip_search", "compact", "--index", str(idx)]
    return subprocess.run(cmd, env=env, capture_output=True, check=False).returncode


@pytest.mark.parametrize("step", ["compact-written", "compact-committed", "compact-published", "ann-published"])
def test_kill_at_each_compaction_step_leaves_old_or_new_never_a_mix(tmp_path: Path, step: str) -> None:
    idx = tmp_path / "idx"
    videos = clustered_videos(SYNTH, 12, segments=2, seed=9)
    write_videos(idx, SYNTH, videos, flush_every=6)
    with IndexWriter(idx, SYNTH) as writer:
        writer.remove([videos[3].path])
    expected = contents(idx)
    assert compact_cli(idx, step) == 137
    assert contents(idx) == expected  # readable right after the kill, every live row whole, none lost
    assert compact_cli(idx, None) == 0  # recovery, then (another) compaction
    assert contents(idx) == expected
    manifest = read_manifest(idx)
    assert manifest.ann is not None and manifest.ann.generation == manifest.generation
    with IndexWriter(idx, SYNTH) as writer:
        live = writer.catalog.live_rows_by_shard(manifest.generation)
        retired = {str(r["name"]) for r in compaction.retired_shards(writer.catalog)}
    assert sum(live.values()) == manifest.vector_count  # no dead rows left, every live row in a named shard
    assert vector_files(idx) == {s.name for s in manifest.shards} | (retired & vector_files(idx))


def test_kill_between_deleting_retired_files_and_forgetting_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx = tmp_path / "idx"
    videos = clustered_videos(SYNTH, 8, segments=2, seed=10)
    write_videos(idx, SYNTH, videos, flush_every=4)
    with IndexWriter(idx, SYNTH) as writer:
        writer.remove([videos[0].path])
        writer.compact(CompactionPolicy(grace_s=30.0), force=True)
    expected = contents(idx)

    def die(step: str) -> None:
        if step == "compact-reclaimed":
            raise KeyboardInterrupt

    later = compaction.time.time() + 31
    monkeypatch.setattr(compaction.time, "time", lambda: later)
    monkeypatch.setattr(compaction, "crash_point", die)
    with pytest.raises(KeyboardInterrupt), IndexWriter(idx, SYNTH):
        pass
    assert contents(idx) == expected
    monkeypatch.undo()
    monkeypatch.setattr(compaction.time, "time", lambda: later)
    with IndexWriter(idx, SYNTH) as writer:
        assert compaction.retired_shards(writer.catalog) == []
    assert vector_files(idx) == {s.name for s in read_manifest(idx).shards}
    assert contents(idx) == expected


def dir_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def by_place(idx: Path) -> dict[tuple[str, float], tuple[bytes, bytes]]:
    """Every live segment's (path, start) -> v and Z bytes: what searches score, independent of ids."""
    snap = Snapshot.open(idx)
    try:
        ids = snap.live_ids()
        v, z = snap.vectors.gather(ids)
        rows = snap.catalog.segment_rows(ids.tolist(), snap.generation)
        return {
            (str(rows[int(i)]["path"]), float(rows[int(i)]["start_s"])): (v[k].tobytes(), z[k].tobytes())
            for k, i in enumerate(ids)
        }
    finally:
        snap.catalog.close()


def test_lifecycle_of_nightly_runs_stays_like_a_fresh_index(tmp_path: Path) -> None:
    """Cycles of deletes, additions, rewrites, moves and touches, each ending like an ``index --prune`` run (the
    default policy, zero grace): at the end the same vectors as a fresh index of the final library, and a
    directory at most 1.3x its size."""
    from xclip_search.store.catalog import FileUpdate

    rng = np.random.default_rng(12)
    idx = tmp_path / "idx"
    library = clustered_videos(SYNTH, 60, segments=3, seed=11)
    write_videos(idx, SYNTH, library, flush_every=30)
    policy = CompactionPolicy(grace_s=0.0)
    compactions = 0
    for cycle in range(8):
        picks = rng.permutation(len(library))
        gone = [library[i] for i in picks[:6]]
        rewritten = [library[i] for i in picks[6:10]]
        moved = [library[i] for i in picks[10:13]]
        touched = [library[i] for i in picks[13:16]]
        for v in rewritten:  # re-encoded in place: new vectors, another size
            v.v = unit(rng.standard_normal((len(v.v) % 3 + 2, D)))
            v.z = rng.standard_normal((len(v.v), N, D)).astype(np.float32)
        added = clustered_videos(SYNTH, 7, segments=2, seed=100 + cycle, prefix=f"/lib/c{cycle}")
        with IndexWriter(idx, SYNTH) as writer:
            writer.remove([v.path for v in gone])
            for v in moved:
                new = v.path.replace("/lib/", f"/lib/m{cycle}/", 1)
                writer.update_file(FileUpdate(v.path, new, 1000 + len(v.v), 1, None, None, None))
                v.path = new
            for v in touched:
                writer.update_file(FileUpdate(v.path, v.path, 1000 + len(v.v), 1, None, None, None))
        write_videos(idx, SYNTH, [*rewritten, *added], flush_every=8, ann=None)
        library = [v for v in library if v not in gone] + added
        with IndexWriter(idx, SYNTH) as writer:
            report = compaction.maybe_compact(writer, policy)
            compactions += bool(report and report.compacted)
            writer.publish_ann()
    assert compactions >= 2
    fresh = tmp_path / "fresh"
    write_videos(fresh, SYNTH, library)
    assert by_place(idx) == by_place(fresh)
    assert dir_bytes(idx / "vectors") <= 1.3 * dir_bytes(fresh / "vectors")
    assert dir_bytes(idx) <= 1.3 * dir_bytes(fresh), (dir_bytes(idx), dir_bytes(fresh))


def stored_thumbnails(index: Index) -> dict[int, bytes | None]:
    from xclip_search.store.thumbshards import read_stored

    ids = index.catalog.live_segment_ids(index.generation).tolist()
    rows = index.catalog.segment_rows(ids, index.generation)
    return {i: read_stored(index.directory, str(r["shard"]), int(r["row"])) for i, r in rows.items()}


def test_an_index_run_compacts_at_its_end(tmp_path: Path, tiny_ckpt: Path, generated_videos: dict[str, Path]) -> None:
    import shutil

    from indexer.pipeline import IndexOptions, run_index

    from .conftest import REAL_CLIP

    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(REAL_CLIP, lib / "bikes.mp4")
    shutil.copy(generated_videos["landscape_h264.mp4"], lib / "landscape.mp4")
    idx = tmp_path / "idx"
    opts = IndexOptions(segment_seconds=2.0, workers=1, commit_every=1, prune=True, compact_grace_s=0.0)
    run_index([lib], idx, model=str(tiny_ckpt), options=opts)
    assert len(read_manifest(idx).shards) == 2
    (lib / "landscape.mp4").unlink()
    kept = IndexOptions(segment_seconds=2.0, workers=1, prune=True, compact=False)
    run_index([lib], idx, options=kept)  # compaction off: the dead rows stay
    with Index.open(idx) as index:
        assert index.info()["compaction"]["dead_rows"] > 0
        thumbs = stored_thumbnails(index)
    assert thumbs and all(t is not None for t in thumbs.values())
    run_index([lib], idx, options=opts)  # nothing to index; the run still compacts at its end
    manifest = read_manifest(idx)
    assert len(manifest.shards) == 1 and vector_files(idx) == {manifest.shards[0].name}
    with Index.open(idx) as index:
        assert stored_thumbnails(index) == thumbs  # copied with their rows
    assert manifest.ann is not None and manifest.ann.generation == manifest.generation
    fresh = tmp_path / "fresh"
    run_index([lib], fresh, model=str(tiny_ckpt), options=opts)
    with Index.open(idx, device="cpu") as index, Index.open(fresh, device="cpu") as other:
        assert index.info()["compaction"]["dead_rows"] == 0
        assert hits(index) == hits(other)
