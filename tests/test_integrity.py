"""Damaged index files never give a silent wrong answer, and every kind of damage has a way back.

Each test damages a copy of one small real index (tiny model, real videos) the way issue 12 did: flipped bytes
in a shard's ``v`` or ``Z``, two ids swapped in ``ids``, a deleted shard, a garbage manifest, a truncated
catalog. A search must then end in a one-line error naming the shard and the videos it holds (never exit 0
with other results), ``reindex`` must refuse to build the ANN from the damage, and the repair (``verify
--repair`` or a plain ``index`` run) must give back exactly the undamaged index's results.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from xclip_search import Index
from xclip_search.cli import cli
from xclip_search.errors import ShardCorruptError
from xclip_search.store.manifest import ShardInfo
from xclip_search.store.vectors import ROWHASH, VectorStore, VectorView, _keys, row_hashes

from .conftest import REAL_CLIP

QUERIES = ["a person riding a bike", "a red square moving"]
Results = dict[tuple[str, float, float], float]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory, generated_videos: dict[str, Path]) -> Path:
    root = tmp_path_factory.mktemp("integrity-lib")
    shutil.copy(REAL_CLIP, root / "bikes.mp4")
    for name in ("landscape_h264.mp4", "portrait_vp9.webm", "square_mpeg4.avi"):
        shutil.copy(generated_videos[name], root / name)
    return root


def index_args(lib: Path, idx: Path, ckpt: Path) -> list[str]:
    return ["index", str(lib), "--index", str(idx), "--model", str(ckpt), "--segment-seconds", "1"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, lib: Path, tiny_ckpt: Path) -> Path:
    """The undamaged index: two shards (two runs), so damage to one leaves the other's videos alone."""
    idx = tmp_path_factory.mktemp("integrity") / "idx"
    first = tmp_path_factory.mktemp("first")
    for name in ("landscape_h264.mp4", "portrait_vp9.webm"):
        shutil.copy(lib / name, first / name)
    # Index two files, then the whole folder: the other two land in a second shard.
    assert run(*index_args(first, idx, tiny_ckpt), "--json").exit_code == 0
    shutil.rmtree(first)
    result = run(*index_args(lib, idx, tiny_ckpt), "--prune", "--json")
    assert result.exit_code == 0, result.output
    with Index.open(idx) as index:
        assert len(index.snapshot.manifest.shards) >= 2
    return idx


@pytest.fixture(scope="module")
def expected(built: Path) -> Results:
    return results(built)


def results(idx: Path) -> Results:
    out: Results = {}
    with Index.open(idx) as index:
        for query in QUERIES:
            for hit in index.search(query, top_k=1000, candidates=1000, per_video=False):
                out[(hit.path, round(hit.start, 3), round(hit.end, 3))] = hit.score
    return out


def assert_same(got: Results, expected: Results) -> None:
    assert set(got) == set(expected)
    assert max(abs(got[k] - expected[k]) for k in expected) < 1e-5


@pytest.fixture()
def idx(tmp_path: Path, built: Path) -> Path:
    copy = tmp_path / "idx"
    shutil.copytree(built, copy)
    return copy


def top_hit_location(idx: Path) -> tuple[str, int, str]:
    """(shard, row, video path) of the best segment for the first query."""
    with Index.open(idx) as index:
        hit = index.search(QUERIES[0], top_k=1, per_video=False)[0]
        row = index.catalog.segment_rows([hit.segment_id], index.generation)[hit.segment_id]
    return str(row["shard"]), int(row["row"]), hit.path


def flip_row(path: Path, row: int, nbytes: int = 256) -> None:
    arr = np.load(path, mmap_mode="r")
    row_bytes = int(np.prod(arr.shape[1:])) * arr.dtype.itemsize
    offset = int(arr.offset) + row * row_bytes
    del arr
    with open(path, "r+b") as f:
        f.seek(offset)
        data = bytearray(f.read(min(nbytes, row_bytes)))
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


def swap_ids(path: Path, row: int) -> None:
    ids = np.load(path, mmap_mode="r+")
    other = (row + 1) % len(ids)
    ids[[row, other]] = ids[[other, row]]
    ids.flush()
    del ids


def damage(idx: Path, kind: str) -> tuple[str, str]:
    shard, row, path = top_hit_location(idx)
    part = idx / "vectors" / f"{shard}.{kind}.npy"
    if kind == "ids":
        swap_ids(part, row)
    else:
        flip_row(part, row)
    return shard, path


def one_error_line(result: Result) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [ln for ln in lines if ln.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert all(ln.startswith(("Error:", "Hint:")) for ln in lines), result.output
    return errors[0]


@pytest.mark.parametrize("kind", ["v", "z", "ids", "rowhash"])
def test_damaged_rows_are_refused_named_and_repaired(idx: Path, kind: str, expected: Results) -> None:
    shard, video = damage(idx, kind)
    # Searching: a one-line error that names the shard, its damaged file and its videos; no results.
    result = run("search", QUERIES[0], "--index", str(idx), "--json", "--all-segments", "--top-k", "50")
    line = one_error_line(result)
    assert shard in line and video in line and f"{shard}.{kind}.npy" in line
    # The ANN is not rebuilt from the damage.
    line = one_error_line(run("reindex", "--index", str(idx)))
    assert shard in line and video in line
    # verify names it too, and exits 1.
    checked = run("verify", "--index", str(idx), "--json")
    assert checked.exit_code == 1
    report = json.loads(checked.output)
    assert [d["name"] for d in report["shards"]["damaged"]] == [shard]
    assert report["shards"]["damaged"][0]["damaged_files"] == [f"vectors/{shard}.{kind}.npy"]
    assert video in report["shards"]["damaged"][0]["videos"]
    # verify --repair re-embeds exactly that shard's videos: results equal the undamaged index's.
    repaired = run("verify", "--index", str(idx), "--repair", "--json")
    assert repaired.exit_code == 0, repaired.output
    assert json.loads(repaired.output.splitlines()[-1])["ok"] is True
    assert_same(results(idx), expected)
    with Index.open(idx) as index:
        assert shard not in {s.name for s in index.snapshot.manifest.shards}
    assert run("verify", "--index", str(idx)).exit_code == 0


def test_damage_after_the_index_was_opened_is_caught_by_the_row_checks(idx: Path) -> None:
    """A server keeps its snapshot open: bytes damaged under its memory map fail the row checksum."""
    with Index.open(idx) as index:
        assert index.search(QUERIES[0], top_k=3)
        shard, row, _ = top_hit_location(idx)
        flip_row(idx / "vectors" / f"{shard}.z.npy", row)
        with pytest.raises(ShardCorruptError, match=shard) as err:
            index.search(QUERIES[0], top_k=3)
        assert err.value.paths


def test_a_deleted_shard_is_rebuilt_by_a_plain_index_run(
    idx: Path, lib: Path, tiny_ckpt: Path, expected: Results
) -> None:
    shard, _, video = top_hit_location(idx)
    for part in (idx / "vectors").glob(f"{shard}.*"):
        part.unlink()
    line = one_error_line(run("search", QUERIES[0], "--index", str(idx)))
    assert shard in line and "missing" in line and video in line
    # The same index command as before re-embeds the shard's videos (it no longer says "unchanged").
    result = run(*index_args(lib, idx, tiny_ckpt), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[-1])["indexed"] >= 1
    assert_same(results(idx), expected)
    assert run("verify", "--index", str(idx)).exit_code == 0


def test_a_garbage_manifest_is_rebuilt_from_the_catalog(idx: Path, expected: Results) -> None:
    (idx / "manifest.json").write_bytes(b"\x00garbage{")
    for args in (["search", QUERIES[0]], ["info"]):
        line = one_error_line(run(*args, "--index", str(idx)))
        assert "manifest.json" in line
    result = run("verify", "--index", str(idx), "--repair")
    assert result.exit_code == 0, result.output
    assert "manifest.json rebuilt" in result.output
    assert_same(results(idx), expected)
    with Index.open(idx) as index:
        assert index.snapshot.manifest.ann is not None  # rebuilt too


def test_a_deleted_manifest_is_rebuilt_by_repair(idx: Path, expected: Results) -> None:
    (idx / "manifest.json").unlink()
    line = one_error_line(run("search", QUERIES[0], "--index", str(idx)))
    assert "manifest.json is missing" in line
    assert run("verify", "--index", str(idx)).exit_code == 1
    assert run("verify", "--index", str(idx), "--repair").exit_code == 0
    assert_same(results(idx), expected)


def test_a_damaged_ann_file_is_refused_and_rebuilt(idx: Path, expected: Results) -> None:
    ann = next((idx / "ann").glob("*.faiss"))
    flip_bytes = bytearray(ann.read_bytes())
    flip_bytes[-100:] = bytes(b ^ 0xFF for b in flip_bytes[-100:])
    ann.write_bytes(bytes(flip_bytes))
    line = one_error_line(run("search", QUERIES[0], "--index", str(idx)))
    assert ann.name in line and "checksum" in line
    report = json.loads(run("verify", "--index", str(idx), "--json").output)
    assert report["ann"]["ok"] is False and report["shards"]["damaged"] == []
    assert run("verify", "--index", str(idx), "--repair").exit_code == 0
    assert_same(results(idx), expected)


def test_an_index_run_rebuilds_a_garbage_manifest(idx: Path, lib: Path, tiny_ckpt: Path, expected: Results) -> None:
    (idx / "manifest.json").write_text("{}")
    result = run(*index_args(lib, idx, tiny_ckpt), "--json")
    assert result.exit_code == 0, result.output
    assert_same(results(idx), expected)


@pytest.mark.parametrize("how", ["truncated", "overwritten"])
def test_a_damaged_catalog_is_one_line_naming_the_file_and_the_recovery(
    idx: Path, lib: Path, tiny_ckpt: Path, how: str
) -> None:
    path = idx / "catalog.sqlite"
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(data[:100] + b"\xa5" * (len(data) - 100))
    for args in (
        ["search", QUERIES[0], "--index", str(idx)],
        ["info", "--index", str(idx)],
        index_args(lib, idx, tiny_ckpt),
        ["serve", "--index", str(idx), "--port", "0"],
        ["verify", "--index", str(idx), "--repair"],
    ):
        line = one_error_line(run(*args))
        assert str(path) in line, line
    verify = run("verify", "--index", str(idx))
    assert verify.exit_code == 1 and "catalog.sqlite" in verify.output


def test_shards_without_row_hashes_are_verified_whole(tmp_path: Path) -> None:
    """Indexes written before row hashes existed still refuse damaged rows (their sha256, once)."""
    store = VectorStore(tmp_path)
    rng = np.random.default_rng(0)
    info = store.write_shard(1, np.arange(4), rng.standard_normal((4, 8)), rng.standard_normal((4, 2, 8)))
    store.path(info.name, ROWHASH).unlink()
    old = ShardInfo(info.name, info.count, info.generation, {k: v for k, v in info.sha256.items() if k != ROWHASH})
    view = VectorView(store, [old])
    view.gather(np.array([2, 0]))
    flip_row(store.path(info.name, "v"), 3, nbytes=8)
    with pytest.raises(ShardCorruptError, match=r"\.v\.npy"):
        VectorView(store, [old]).gather(np.array([0]))


def test_row_hashes_cover_the_row_and_its_id(tmp_path: Path) -> None:
    store = VectorStore(tmp_path)
    rng = np.random.default_rng(1)
    ids = np.array([10, 11, 12])
    info = store.write_shard(1, ids, rng.standard_normal((3, 8)), rng.standard_normal((3, 2, 8)))
    view = VectorView(store, [info])
    v, z = view.gather(np.array([12, 10]))
    assert v.shape == (2, 8) and z.shape == (2, 2, 8)
    swap_ids(store.path(info.name, "ids"), 0)
    with pytest.raises(ShardCorruptError, match="row hash"):
        VectorView(store, [info]).gather_v(np.array([11]))


def test_row_hash_is_the_multilinear_sum_and_catches_every_one_word_change() -> None:
    rng = np.random.default_rng(2)
    rows = rng.standard_normal((3, 5, 3)).astype(np.float16)  # 30 bytes a row: padded to 8 words
    ids = np.array([7, 1 << 40, -3])
    got = row_hashes(ids, rows)
    for i in range(3):
        data = rows[i].tobytes() + b"\x00\x00"
        words = np.frombuffer(data, np.uint32).tolist() + np.array([ids[i]]).view(np.uint32).tolist()
        keys = [int(k) for k in _keys(8)]
        assert int(got[i]) == sum(w * k for w, k in zip(words, keys, strict=True)) % (1 << 64)
    v = rng.standard_normal((1, 64)).astype(np.float32)
    base = row_hashes(np.array([5]), v)[0]
    raw = v.view(np.uint32)
    for word in range(64):
        for bit in (0, 17, 31):  # low, middle and sign bits of each float
            damaged = raw.copy()
            damaged[0, word] ^= np.uint32(1 << bit)
            assert row_hashes(np.array([5]), damaged.view(np.float32))[0] != base
    # Two sign bits flipped together (what defeats a sum over 64-bit words) are caught too.
    damaged = raw.copy()
    damaged[0, [1, 3]] ^= np.uint32(1 << 31)
    assert row_hashes(np.array([5]), damaged.view(np.float32))[0] != base


def test_an_index_from_before_row_hashes_is_searched_and_upgraded_by_repair(idx: Path, expected: Results) -> None:
    from dataclasses import replace

    from xclip_search.store.integrity import recorded_model
    from xclip_search.store.manifest import write_manifest
    from xclip_search.store.writer import IndexWriter

    with IndexWriter(idx, recorded_model(idx)) as writer:  # make it look like an index from before row hashes
        old = []
        for info in writer.manifest.shards:
            sums = {k: v for k, v in info.sha256.items() if k != ROWHASH}
            writer.catalog.set_shard_checksums(info.name, sums)
            writer.vectors.path(info.name, ROWHASH).unlink()
            old.append(replace(info, sha256=sums))
        writer.manifest = replace(writer.manifest, shards=tuple(old))
        write_manifest(idx, writer.manifest)
    assert_same(results(idx), expected)
    report = json.loads(run("verify", "--index", str(idx), "--json").output)
    assert report["ok"] is True and report["shards"]["without_row_hashes"] == len(old)
    result = run("verify", "--index", str(idx), "--repair", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.splitlines()[-1])
    assert report["shards"]["without_row_hashes"] == 0 and "row hashes added" in report["repaired"][0]
    assert_same(results(idx), expected)


def test_a_gather_across_shards_of_both_z_precisions_is_exact_and_checked(tmp_path: Path) -> None:
    store = VectorStore(tmp_path)
    rng = np.random.default_rng(3)
    v1, z1 = rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((4, 2, 8)).astype(np.float32)
    v2, z2 = rng.standard_normal((3, 8)).astype(np.float32), rng.standard_normal((3, 2, 8)).astype(np.float16)
    a = store.write_shard(1, np.arange(4), v1, z1)
    b = store.write_shard(2, np.arange(10, 13), v2, z2, z_dtype="float16")
    view = VectorView(store, [a, b])
    v, z = view.gather(np.array([11, 2, 10, 0]))
    assert np.array_equal(v, np.stack([v2[1], v1[2], v2[0], v1[0]]))
    assert np.array_equal(z, np.stack([z2[1], z1[2], z2[0], z1[0]]).astype(np.float32))
    flip_row(store.path(b.name, "z"), 0, nbytes=2)
    with pytest.raises(ShardCorruptError, match=b.name):
        view.gather(np.array([2, 10]))
    view.gather(np.array([2, 11]))  # the other rows still read
