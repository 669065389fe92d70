"""The ANN cache: choice by size and memory, exact refinement, filters, atomic publish, corruption, reindex."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from xclip_search.checkpoint import ModelIdentity
from xclip_search.errors import DependencyError, IndexCorruptError, InvalidArgumentError
from xclip_search.store import ann as ann_store
from xclip_search.store import snapshot as snapshot_mod
from xclip_search.store.fsio import sha256_file
from xclip_search.store.manifest import read_manifest, write_manifest
from xclip_search.store.snapshot import Snapshot
from xclip_search.store.writer import IndexWriter

from .synthetic import Video, clustered_videos, one_faiss_thread, unit, write_videos

D, N = 16, 4
IDENTITY = ModelIdentity(
    source="synthetic", revision=None, config_hash="ann", num_frames=8, image_size=32, embed_dim=D, num_tokens=N
)
MiB = 1 << 20
__all__ = ["one_faiss_thread"]  # an autouse fixture: imported to apply to this module


def brute_force(snap: Snapshot, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[int]:
    ids = snap.live_ids() if allowed is None else allowed
    scores = snap.vectors.gather_v(ids) @ q
    return ids[np.lexsort((ids, -scores))][:k].tolist()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Video]]:
    """3,000 clustered segments (750 videos of 4), ANN built as IVF-PQ."""
    directory = tmp_path_factory.mktemp("ann") / "idx"
    videos = clustered_videos(IDENTITY, 750, segments=4, topics=12, seed=3)
    write_videos(directory, IDENTITY, videos, flush_every=1000, ann="ivfpq")
    return directory, videos


def test_plan_follows_size_and_budget() -> None:
    assert ann_store.plan_ann(500, 512).kind == "flat"
    assert ann_store.plan_ann(500, 512, kind="ivfpq").kind == "flat"  # too few vectors to train
    small = ann_store.plan_ann(20_000, 512)
    assert small.kind == "flat" and small.exact
    big = ann_store.plan_ann(1_000_000, 512)
    assert big.kind == "ivfpq" and not big.exact
    assert big.params["nlist"] == 2048 and big.params["m"] == 64 and big.refine > 1
    assert big.memory_bytes <= ann_store.DEFAULT_MEMORY_BUDGET
    assert ann_store.plan_ann(100_000, 512).kind == "ivfpq"
    tight = ann_store.plan_ann(1_000_000, 512, memory_budget=40 * MiB)
    assert tight.kind == "ivfpq" and tight.params["m"] < 64 and tight.memory_bytes <= 40 * MiB
    hnsw = ann_store.plan_ann(200_000, 512, kind="hnsw", memory_budget=4 << 30)
    assert hnsw.kind == "hnsw" and hnsw.exact and hnsw.params["M"] == 32
    forced_flat = ann_store.plan_ann(200_000, 512, kind="flat", memory_budget=1 << 30)
    assert forced_flat.kind == "flat"


@pytest.mark.parametrize(
    "count,kind,budget",
    [(100_000_000, "auto", 100 * MiB), (200_000, "flat", 100 * MiB), (1_000_000, "hnsw", 1 << 30)],
)
def test_a_budget_nothing_fits_is_refused_with_the_two_knobs(count: int, kind: str, budget: int) -> None:
    with pytest.raises(InvalidArgumentError, match="memory budget") as err:
        ann_store.plan_ann(count, 512, kind=kind, memory_budget=budget)
    assert "--ann-memory" in (err.value.hint or "") and "--ann" in (err.value.hint or "")


def test_sizes_and_kinds_parse() -> None:
    assert ann_store.parse_size("512MB") == 512 * MiB
    assert ann_store.parse_size("2GiB") == 2 << 30
    assert ann_store.parse_size("1.5g") == int(1.5 * (1 << 30))
    assert ann_store.parse_size("4096") == 4096
    for bad in ("lots", "-1MB", "0", "1 PB"):
        with pytest.raises(InvalidArgumentError):
            ann_store.parse_size(bad)
    with pytest.raises(InvalidArgumentError, match="Supported values"):
        ann_store.plan_ann(10, 8, kind="lsh")


def test_ivfpq_scores_are_exact_cosines_and_recall_is_high(big: tuple[Path, list[Video]]) -> None:
    directory, videos = big
    snap = Snapshot.open(directory)
    assert snap.manifest.ann is not None and snap.manifest.ann.kind == "ivfpq"
    assert snap.manifest.ann.params["refine"] > 1
    rng = np.random.default_rng(0)
    recalls = []
    for i in range(20):
        q = unit(videos[i * 7].v[0] + 0.3 * rng.standard_normal(D))
        found = snap.coarse(q, 10)
        ids = np.array([c.segment_id for c in found])
        exact = snap.vectors.gather_v(ids) @ q
        # The quantised index only proposes; the scores are the stored v's exact cosines, best first.
        assert np.allclose([c.coarse_score for c in found], exact, atol=1e-6)
        assert all(a >= b for a, b in itertools.pairwise(exact))
        recalls.append(len(set(ids.tolist()) & set(brute_force(snap, q, 10))) / 10)
    assert np.mean(recalls) >= 0.9, recalls
    own = snap.coarse(videos[5].v[2], 1)[0]
    assert own.segment_id == videos[5].ids[2] and own.coarse_score == pytest.approx(1.0, abs=1e-5)


def test_hnsw_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    videos = clustered_videos(IDENTITY, 400, segments=3, seed=5)
    write_videos(tmp_path, IDENTITY, videos, ann="hnsw")
    snap = Snapshot.open(tmp_path)
    assert snap.manifest.ann is not None and snap.manifest.ann.kind == "hnsw"
    rng = np.random.default_rng(1)
    recalls = []
    for i in range(10):
        q = unit(videos[i].v[1] + 0.2 * rng.standard_normal(D))
        got = [c.segment_id for c in snap.coarse(q, 10)]
        recalls.append(len(set(got) & set(brute_force(snap, q, 10))) / 10)
    assert np.mean(recalls) >= 0.95
    # A filter through the HNSW graph (the id selector is translated by IndexIDMap2).
    monkeypatch.setattr(snapshot_mod, "EXACT_FILTER_MAX", 10)
    allowed = np.array(sorted(i for v in videos[::4] for i in v.ids), dtype=np.int64)
    got = [c.segment_id for c in snap.coarse(unit(videos[1].v[0]), 10, allowed=allowed)]
    assert len(got) == 10 and set(got) <= set(allowed.tolist())
    assert len(set(got) & set(brute_force(snap, unit(videos[1].v[0]), 10, allowed))) >= 9


@pytest.mark.parametrize("exact_max", [snapshot_mod.EXACT_FILTER_MAX, 10])
def test_allowed_ids_restrict_the_ann(
    big: tuple[Path, list[Video]], exact_max: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small filters are scanned exactly; large ones go through a FAISS id selector (forced here with 10)."""
    monkeypatch.setattr(snapshot_mod, "EXACT_FILTER_MAX", exact_max)
    directory, videos = big
    snap = Snapshot.open(directory)
    allowed = np.array(sorted(i for v in videos[1::3] for i in v.ids), dtype=np.int64)
    q = unit(videos[4].v[0])  # a video outside the allowed third
    found = snap.coarse(q, 10, allowed=allowed)
    got = [c.segment_id for c in found]
    assert len(got) == 10 and set(got) <= set(allowed.tolist())
    truth = brute_force(snap, q, 10, allowed)
    assert len(set(got) & set(truth)) >= 9


def test_publish_is_atomic_and_checksummed(tmp_path: Path) -> None:
    videos = clustered_videos(IDENTITY, 10, seed=1)
    write_videos(tmp_path, IDENTITY, videos)
    (tmp_path / "ann" / ".00000001.faiss.tmp-123-dead").write_bytes(b"half a file from a crashed writer")
    with IndexWriter(tmp_path, IDENTITY) as w:
        info = w.publish_ann(force=True)
    assert info is not None
    assert sha256_file(tmp_path / info.file) == info.sha256 == read_manifest(tmp_path).ann.sha256  # type: ignore[union-attr]
    assert [p.name for p in (tmp_path / "ann").iterdir()] == [Path(info.file).name]


def test_corrupt_ann_is_refused_then_reindex_rebuilds(big: tuple[Path, list[Video]], tmp_path: Path) -> None:
    import shutil

    from click.testing import CliRunner

    from xclip_search.cli import cli

    directory = tmp_path / "copy"
    shutil.copytree(big[0], directory)
    info = read_manifest(directory).ann
    assert info is not None
    q = unit(big[1][0].v[0])
    before = [c.segment_id for c in Snapshot.open(directory).coarse(q, 10)]
    path = directory / info.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match="checksum") as err:
        Snapshot.open(directory)
    assert "xclip-search reindex" in (err.value.hint or "")
    args = ["reindex", "--index", str(directory), "--ann", "ivfpq", "--ann-memory", "64MB", "--json"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ann"]["type"] == "ivfpq" and report["ann"]["count"] == 3000
    assert report["ann"]["memory_bytes"] > 0 and report["ann"]["params"]["refine"] > 1
    assert [c.segment_id for c in Snapshot.open(directory).coarse(q, 10)] == before
    # Without options, reindex keeps the recorded choice; --ann auto returns to the size rule (flat at 3,000).
    again = CliRunner().invoke(cli, ["reindex", "--index", str(directory), "--json"], catch_exceptions=False)
    assert json.loads(again.stdout)["ann"]["type"] == "ivfpq"
    auto = CliRunner().invoke(cli, ["reindex", "--index", str(directory), "--ann", "auto"], catch_exceptions=False)
    assert auto.exit_code == 0 and "flat" in auto.stdout


def test_mismatched_ann_file_is_refused(tmp_path: Path) -> None:
    """A well-formed FAISS file that is not what the manifest describes (kind, dimension) is not served."""
    import faiss

    videos = clustered_videos(IDENTITY, 300, segments=4, seed=2)
    write_videos(tmp_path, IDENTITY, videos, ann="ivfpq")
    manifest = read_manifest(tmp_path)
    assert manifest.ann is not None
    other = faiss.IndexIDMap2(faiss.IndexFlatIP(D))
    other.add_with_ids(np.zeros((1200, D), np.float32), np.arange(1200, dtype=np.int64))
    wrong_kind = ann_store.write_ann(tmp_path, other, generation=manifest.generation, kind="x", params={})
    write_manifest(
        tmp_path, replace(manifest, ann=replace(manifest.ann, file=wrong_kind.file, sha256=wrong_kind.sha256))
    )
    with pytest.raises(IndexCorruptError, match="manifest says ivfpq"):
        Snapshot.open(tmp_path)
    wide = faiss.IndexIDMap2(faiss.IndexFlatIP(D * 2))
    wide.add_with_ids(np.zeros((1200, D * 2), np.float32), np.arange(1200, dtype=np.int64))
    wrong_dim = ann_store.write_ann(tmp_path, wide, generation=manifest.generation, kind="flat", params={})
    flat_info = replace(manifest.ann, kind="flat", file=wrong_dim.file, sha256=wrong_dim.sha256)
    write_manifest(tmp_path, replace(manifest, ann=flat_info))
    with pytest.raises(IndexCorruptError, match="dimension"):
        Snapshot.open(tmp_path)


def test_trained_index_leaves_a_small_tail_to_the_exact_scan(tmp_path: Path) -> None:
    videos = clustered_videos(IDENTITY, 300, segments=4, seed=4)
    write_videos(tmp_path, IDENTITY, videos, ann="ivfpq")
    built = read_manifest(tmp_path).ann
    assert built is not None
    newcomer = clustered_videos(IDENTITY, 1, segments=3, seed=99, prefix="/new")
    write_videos(tmp_path, IDENTITY, newcomer, ann=None)
    with IndexWriter(tmp_path, IDENTITY) as w:
        kept = w.publish_ann()  # 3 new segments: not worth retraining IVF-PQ over 1,200
    assert kept == built
    snap = Snapshot.open(tmp_path)
    assert snap.manifest.ann is not None and snap.manifest.ann.generation < snap.generation
    hit = snap.coarse(newcomer[0].v[1], 1)[0]
    assert hit.segment_id == newcomer[0].ids[1] and hit.coarse_score == pytest.approx(1.0, abs=1e-5)
    allowed = np.array(sorted([*videos[0].ids, newcomer[0].ids[0]]), dtype=np.int64)
    assert {c.segment_id for c in snap.coarse(newcomer[0].v[1], 10, allowed=allowed)} == set(allowed.tolist())
    assert snap.manifest.ann.kind == "ivfpq"
    with IndexWriter(tmp_path, IDENTITY) as w:
        rebuilt = w.publish_ann(force=True)
    assert rebuilt is not None and rebuilt.generation == read_manifest(tmp_path).generation
    assert rebuilt.count == 1203


def test_recorded_policy_is_used_by_later_runs(tmp_path: Path) -> None:
    videos = clustered_videos(IDENTITY, 300, segments=4, seed=6)
    write_videos(tmp_path, IDENTITY, videos)
    assert read_manifest(tmp_path).ann.kind == "flat"  # type: ignore[union-attr]
    with IndexWriter(tmp_path, IDENTITY) as w:
        w.set_ann_policy("ivfpq", 64 * MiB)
        with pytest.raises(InvalidArgumentError):
            w.set_ann_policy("annoy", 1)
    write_videos(tmp_path, IDENTITY, clustered_videos(IDENTITY, 1, seed=7, prefix="/more"), ann=None)
    with IndexWriter(tmp_path, IDENTITY) as w:
        info = w.publish_ann()
    assert info is not None and info.kind == "ivfpq"


def test_gpu_build_needs_a_gpu(big: tuple[Path, list[Video]]) -> None:
    if ann_store.gpu_count() > 0:  # pragma: no cover - a GPU machine builds; covered by the GPU run
        pytest.skip("a GPU is present")
    snap = Snapshot.open(big[0])
    plan = ann_store.plan_ann(3000, D, kind="ivfpq")
    with pytest.raises(DependencyError, match="no GPU"):
        ann_store.build_index(plan, snap.vectors.shards, snap.live_ids(), D, use_gpu=True)
