"""Parquet export: a round trip of segments, videos, v, Z and tags; filters; atomic and refusing to overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from xclip_search.checkpoint import ModelIdentity
from xclip_search.cli import cli
from xclip_search.errors import InvalidArgumentError
from xclip_search.export import export_parquet
from xclip_search.filters import SearchFilter
from xclip_search.store.catalog import Catalog
from xclip_search.store.snapshot import Snapshot

from .synthetic import Video, clustered_videos, write_videos

D, N = 8, 3
IDENTITY = ModelIdentity(
    source="synthetic", revision=None, config_hash="exp", num_frames=8, image_size=32, embed_dim=D, num_tokens=N
)


@pytest.fixture(scope="module", params=["float32", "float16"])
def indexed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Video]]:
    directory = tmp_path_factory.mktemp(f"export-{request.param}") / "idx"
    videos = clustered_videos(IDENTITY, 30, segments=3, seed=4)
    write_videos(directory, IDENTITY, videos[:20], z_dtype=request.param, flush_every=20)
    write_videos(directory, IDENTITY, videos[20:], z_dtype=request.param, ann=None)  # a tail after the ANN
    catalog = Catalog.open(directory)
    catalog.save_tags(["cooking"], [videos[0].ids[0]], [(videos[0].ids[0], "cooking", 0.75, 0.31)])
    return directory, videos


def test_round_trip(indexed: tuple[Path, list[Video]], tmp_path: Path) -> None:
    directory, videos = indexed
    snap = Snapshot.open(directory)
    report = export_parquet(snap, tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(report.files) == [
        "contexts.parquet",
        "export.json",
        "segments.parquet",
        "tags.parquet",
        "videos.parquet",
    ]
    assert report.segments == 90 and report.videos == 30 and report.tags == 1
    segs = pq.read_table(out / "segments.parquet")
    assert segs.schema.field("v").type.list_size == D
    ids = segs.column("segment_id").to_numpy()
    assert ids.tolist() == sorted(i for v in videos for i in v.ids)
    v = segs.column("v").combine_chunks().values.to_numpy().reshape(-1, D)
    ctx = pq.read_table(out / "contexts.parquet")
    assert ctx.column("segment_id").to_numpy().tolist() == ids.tolist()
    z = ctx.column("z").combine_chunks().values.to_numpy().reshape(-1, N, D)
    by_id = {i: (vid, k) for vid in videos for k, i in enumerate(vid.ids)}
    for row, sid in enumerate(ids.tolist()):
        video, k = by_id[sid]
        assert np.array_equal(v[row], video.v[k])
        stored = video.z[k].astype(snap.vectors.shards[0].z.dtype).astype(np.float32)  # exactly what the index holds
        assert np.array_equal(z[row], stored)
    paths = segs.column("path").to_pylist()
    assert paths[0] == videos[0].path and segs.column("end_s").to_pylist()[:3] == [10.0, 20.0, 30.0]
    vids = pq.read_table(out / "videos.parquet").to_pylist()
    assert {r["path"] for r in vids} == {v.path for v in videos} and vids[0]["status"] == "indexed"
    assert pq.read_table(out / "tags.parquet").to_pylist()[0]["label"] == "cooking"
    meta = json.loads((out / "export.json").read_text())
    assert (meta["dim"], meta["tokens"], meta["counts"]["segments"]) == (D, N, 90)
    assert meta["model"]["config_hash"] == "exp"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary directory left behind


def test_filtered_export_without_z(indexed: tuple[Path, list[Video]], tmp_path: Path) -> None:
    directory, videos = indexed
    snap = Snapshot.open(directory)
    report = export_parquet(snap, tmp_path / "some", include_z=False, where=SearchFilter.parse(glob="*/even/*"))
    assert "contexts.parquet" not in report.files
    keep = [v for v in videos if "/even/" in v.path]
    segs = pq.read_table(tmp_path / "some" / "segments.parquet")
    assert sorted(segs.column("segment_id").to_pylist()) == sorted(i for v in keep for i in v.ids)
    assert {r["path"] for r in pq.read_table(tmp_path / "some" / "videos.parquet").to_pylist()} == {
        v.path for v in keep
    }


def test_refuses_to_overwrite_and_cleans_up_after_failure(
    indexed: tuple[Path, list[Video]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snap = Snapshot.open(indexed[0])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(InvalidArgumentError, match="not an empty directory"):
        export_parquet(snap, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    export_parquet(snap, tmp_path / "empty", include_z=False)  # an empty directory is fine
    assert (tmp_path / "empty" / "segments.parquet").exists()

    import xclip_search.export as export_mod

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(export_mod, "_write_description", boom)
    with pytest.raises(OSError, match="disk full"):
        export_parquet(snap, tmp_path / "broken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "full"]


def test_export_command(indexed: tuple[Path, list[Video]], tmp_path: Path) -> None:
    out = tmp_path / "cli-out"
    result = CliRunner().invoke(
        cli, ["export", "--index", str(indexed[0]), "--parquet", str(out), "--no-z", "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["segments"] == 90 and data["bytes"] > 0 and "contexts.parquet" not in data["files"]
    human = CliRunner().invoke(cli, ["export", "--index", str(indexed[0]), "--parquet", str(tmp_path / "h")])
    assert human.exit_code == 0 and "Exported 90 segment(s) of 30 video(s)" in human.stdout
    again = CliRunner().invoke(cli, ["export", "--index", str(indexed[0]), "--parquet", str(out)])
    assert again.exit_code == 1 and again.stderr.startswith("Error: ") and "not an empty directory" in again.stderr
