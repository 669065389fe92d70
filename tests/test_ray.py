"""``index --ray``: the same library indexed on a local Ray cluster (2 CPUs) and on one machine.

All Ray tests share one cluster (it takes seconds to start). They skip when Ray is not installed, except where
``XCLIP_SEARCH_REQUIRE_RAY=1`` (CI), so CI never goes green by skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from indexer import IndexOptions, run_index
from xclip_search.cli import cli as main_cli
from xclip_search.index import Index
from xclip_search.store.manifest import read_manifest

from .conftest import REAL_CLIP

try:
    import ray
except ImportError:
    if os.environ.get("XCLIP_SEARCH_REQUIRE_RAY") == "1":
        raise
    pytest.skip('Ray is not installed (pip install "xclip-search[ray]")', allow_module_level=True)

from indexer.distributed import LOST_REASON, RayOptions, run_index_ray

# Each run starts its Ray actors afresh (a few seconds on 2 busy cores): the module takes minutes.
pytestmark = pytest.mark.slow

OPTS = IndexOptions(segment_seconds=1.0, workers=1)
QUERIES = ["a person riding a bike", "colourful squares", "red"]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    # Workers import this checkout's code, whether or not it is installed.
    path = os.pathsep.join(p for p in sys.path if p)
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_library(tmp_path_factory: pytest.TempPathFactory, generated_videos: dict[str, Path]) -> Path:
    """Generated clips in several codecs, a real clip and a file that fails to decode."""
    lib = tmp_path_factory.mktemp("raylib") / "library"
    (lib / "sub").mkdir(parents=True)
    for i, src in enumerate(generated_videos.values()):
        shutil.copy(src, (lib / "sub" if i % 2 else lib) / src.name)
    shutil.copy(REAL_CLIP, lib / "bikes.mp4")
    (lib / "not_a_video.mp4").write_text("this is text, not a video\n")
    return lib


def videos(index_dir: Path) -> dict[str, dict[str, Any]]:
    """Video rows by path, without what differs between any two runs (row id, times, run and generation)."""
    skip = {"id", "indexed_at", "updated_at", "run_id", "generation"}
    with sqlite3.connect(index_dir / "catalog.sqlite") as db:
        cur = db.execute("SELECT * FROM videos")
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, row, strict=True)) for row in cur]
    return {r["path"]: {k: v for k, v in r.items() if k not in skip} for r in rows}


def segments(index_dir: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(index_dir / "catalog.sqlite") as db:
        return db.execute(
            "SELECT v.path, s.id, s.seq, s.start_s, s.end_s, s.frame_start, s.frame_end, s.gen_removed "
            "FROM segments s JOIN videos v ON v.id = s.video_id ORDER BY s.id"
        ).fetchall()


def test_ray_index_equals_single_machine(ray_cluster: None, tmp_path: Path, tiny_ckpt: Path, ray_library: Path) -> None:
    single, dist = tmp_path / "single", tmp_path / "ray"
    a = run_index([ray_library], single, model=str(tiny_ckpt), options=OPTS)
    b = run_index_ray(
        [ray_library], dist, model=str(tiny_ckpt), options=OPTS, ray_options=RayOptions(files_per_shard=2)
    )
    assert b.to_dict() == a.to_dict()
    assert b.exit_code == a.exit_code == 3  # the text file named .mp4 failed, and the run went on
    assert sorted((o.path, o.status, o.reason, o.segments) for o in b.outcomes) == sorted(
        (o.path, o.status, o.reason, o.segments) for o in a.outcomes
    )
    rows = videos(dist)
    assert rows == videos(single)
    broken = str(ray_library / "not_a_video.mp4")
    assert b.count("indexed") == 5 and rows[broken]["status"] == "failed" and rows[broken]["reason"]
    assert segments(dist) == segments(single)  # same segment ids, times and frame ranges
    assert len(segments(dist)) == a.segments > 5
    with Index.open(single) as one, Index.open(dist) as many:
        assert many.info()["segments"] == one.info()["segments"]
        for q in QUERIES:
            for per_video in (True, False):
                ha = one.search(q, top_k=50, per_video=per_video)
                hb = many.search(q, top_k=50, per_video=per_video)
                assert [(h.path, h.segment_id, h.start, h.end) for h in hb] == [
                    (h.path, h.segment_id, h.start, h.end) for h in ha
                ]
                np.testing.assert_allclose([h.score for h in hb], [h.score for h in ha], atol=1e-6, rtol=0)
                np.testing.assert_allclose([h.coarse_score for h in hb], [h.coarse_score for h in ha], atol=1e-6)


def test_rerun_with_ray_does_nothing_new(ray_cluster: None, tmp_path: Path, tiny_ckpt: Path, ray_library: Path) -> None:
    idx = tmp_path / "idx"
    first = run_index_ray([ray_library], idx, model=str(tiny_ckpt), options=OPTS)
    before = (videos(idx), segments(idx), sorted(p.name for p in (idx / "vectors").iterdir()))
    again = run_index_ray([ray_library], idx, options=OPTS)
    assert again.counts() == {
        **first.counts(),
        "indexed": 0,
        "failed": 0,
        "segments": 0,
        "unchanged": 6,
        "still_failed": 1,  # not retried without --retry-failed, as on one machine, but still reported
    }
    cli = CliRunner().invoke(main_cli, ["index", str(ray_library), "--index", str(idx), "--ray", "--json"])
    assert cli.exit_code == 3, cli.output  # the file that failed before still is
    assert json.loads(cli.stdout)["unchanged"] == 6
    assert (videos(idx), segments(idx), sorted(p.name for p in (idx / "vectors").iterdir())) == before


def test_lost_worker_costs_its_files_and_a_rerun_resumes(
    ray_cluster: None, tmp_path: Path, tiny_ckpt: Path, ray_library: Path
) -> None:
    idx = tmp_path / "idx"
    lost = RayOptions(files_per_shard=1, retries=0, fail_on=("bikes.mp4",))
    report = run_index_ray([ray_library], idx, model=str(tiny_ckpt), options=OPTS, ray_options=lost)
    bikes = str(ray_library / "bikes.mp4")
    outcome = {o.path: o for o in report.outcomes}
    assert (outcome[bikes].status, outcome[bikes].reason) == ("failed", LOST_REASON)
    assert report.count("indexed") == 4 and report.exit_code == 3
    assert bikes not in videos(idx)  # not recorded: nothing about the file itself is known to be wrong
    again = run_index_ray([ray_library], idx, options=OPTS)
    assert again.count("indexed") == 1 and again.count("unchanged") == 5
    assert {o.path for o in again.outcomes if o.status == "indexed"} == {bikes}
    with Index.open(idx) as index:
        assert bikes in {h.path for h in index.search("a bike", top_k=10)}
    # Every shard file on disk is a published shard with all its parts and its row hashes.
    names = {s.name for s in read_manifest(idx).shards}
    assert sorted(p.name for p in (idx / "vectors").glob("*.npy")) == sorted(
        f"{n}.{part}.npy" for n in names for part in ("ids", "v", "z", "rowhash")
    )


def test_ray_writes_into_the_catalog_named_by_catalog(
    ray_cluster: None, tmp_path: Path, tiny_ckpt: Path, ray_library: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`index --ray --catalog postgresql://...` keeps the catalog in PostgreSQL, as on one machine."""
    from dataclasses import replace

    from sqlalchemy.engine import make_url

    monkeypatch.delenv("XCLIP_SEARCH_CATALOG", raising=False)
    idx = tmp_path / "idx"
    report = run_index_ray([ray_library], idx, model=str(tiny_ckpt), options=replace(OPTS, catalog_url=pg_url))
    assert report.count("indexed") == 5
    assert not (idx / "catalog.sqlite").exists()
    assert make_url(json.loads((idx / "catalog.json").read_text())["url"]).get_backend_name() == "postgresql"
    monkeypatch.setenv("PGPASSWORD", make_url(pg_url).password or "")
    with Index.open(idx) as index:
        assert index.info()["videos"]["indexed"] == 5
        assert index.search("a person riding a bike", top_k=3)


def test_ray_run_transcribes_on_the_head(
    ray_cluster: None, tmp_path: Path, tiny_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--transcribe`` with ``--ray``: the cluster embeds, then the machine running the index transcribes (the
    same stage as a local run), so the speech cues match a local run's."""
    pytest.importorskip("faster_whisper")
    from dataclasses import replace

    from xclip_search.store.catalog import Catalog
    from xclip_search.testing import make_tiny_whisper, speech_like_audio, synthetic_frames, write_video_with_audio

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    whisper = make_tiny_whisper(tmp_path / "whisper")
    lib = tmp_path / "lib"
    lib.mkdir()
    write_video_with_audio(lib / "talk.mp4", synthetic_frames(30, 48, 64), speech_like_audio(6.0), fps=5)
    opts = replace(OPTS, transcribe=True, speech_model=str(whisper))

    def speech(idx: Path) -> list[tuple[str, float, float]]:
        catalog = Catalog.open(idx)
        try:
            (vid,) = [int(r["id"]) for r in catalog.videos_by_path().values()]
            return [(s.cue.text, s.cue.start, s.cue.end) for s in catalog.cues_of(vid) if s.cue.source == "speech"]
        finally:
            catalog.close()

    on_ray = run_index_ray([lib], tmp_path / "ray", model=str(tiny_ckpt), options=opts)
    local = run_index([lib], tmp_path / "local", model=str(tiny_ckpt), options=opts)
    assert on_ray.to_dict()["transcribed"] == local.to_dict()["transcribed"] == 1
    assert speech(tmp_path / "ray") == speech(tmp_path / "local")
