"""The catalog on SQLite and PostgreSQL: where it is recorded, schema migrations, and writers sharing one catalog.

PostgreSQL cases need a server (XCLIP_SEARCH_TEST_PG_URL, see conftest); they skip without one, unless
XCLIP_SEARCH_REQUIRE_PG=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, literal, select, update
from sqlalchemy.engine import make_url

from xclip_search.checkpoint import ModelIdentity
from xclip_search.errors import CatalogError
from xclip_search.store import migrations
from xclip_search.store.catalog import Catalog, meta_table, segments, videos
from xclip_search.store.location import CatalogLocation, default_url, normalize_url, without_password
from xclip_search.store.manifest import read_manifest
from xclip_search.store.snapshot import Snapshot
from xclip_search.store.sqlglob import glob_match, glob_to_regex
from xclip_search.store.writer import IndexWriter

D, N = 8, 4
IDENTITY = ModelIdentity(
    source="tiny", revision=None, config_hash="abc", num_frames=8, image_size=32, embed_dim=D, num_tokens=N
)


def _location(tmp_path: Path, backend: str | None) -> CatalogLocation:
    return CatalogLocation(normalize_url(backend or default_url(tmp_path)))


def _make_v1_catalog(location: CatalogLocation) -> None:
    """A catalog as the first release wrote it: no dev/inode columns, no tags table, schema_version 1."""
    catalog = Catalog.connect(location, create=True)
    with catalog.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE tags")
        conn.exec_driver_sql("ALTER TABLE videos DROP COLUMN dev")
        conn.exec_driver_sql("ALTER TABLE videos DROP COLUMN inode")
        conn.execute(update(meta_table).where(meta_table.c.key == "schema_version").values(value="1"))
        conn.exec_driver_sql(
            "INSERT INTO videos (path, size, mtime_ns, status, warnings, updated_at, generation) "
            "VALUES ('/v/old.mp4', 10, 1700000000123456789, 'indexed', 0, 'then', 1)"
        )
        conn.exec_driver_sql(
            "INSERT INTO segments (id, video_id, seq, start_s, end_s, frame_start, frame_end, shard, row, gen_added) "
            "VALUES (1, 1, 0, 0.0, 10.0, 0, 250, 's', 0, 1)"
        )
    catalog.close()


def test_an_old_catalog_is_migrated_in_place(tmp_path: Path, catalog_backend: str | None) -> None:
    location = _location(tmp_path, catalog_backend)
    _make_v1_catalog(location)
    catalog = Catalog.connect(location)  # a reader: brings it forward too
    try:
        assert catalog.get_meta("schema_version") == str(migrations.LATEST)
        assert catalog.has_tags_table()
        rows = catalog.videos_by_path()
        assert rows["/v/old.mp4"]["mtime_ns"] == 1700000000123456789 and rows["/v/old.mp4"]["inode"] is None
        catalog.save_tags(["cat"], [1], [(1, "cat", 0.9, 0.3)])
        assert catalog.tags_of([1]) == {1: [{"label": "cat", "prob": 0.9, "score": 0.3}]}
    finally:
        catalog.close()
    again = Catalog.connect(location)  # idempotent: nothing left to do
    assert again.get_meta("schema_version") == str(migrations.LATEST)
    again.close()


def test_a_catalog_newer_than_the_code_is_refused(tmp_path: Path, catalog_backend: str | None) -> None:
    location = _location(tmp_path, catalog_backend)
    catalog = Catalog.connect(location, create=True)
    catalog.set_meta("schema_version", str(migrations.LATEST + 1))
    catalog.close()
    with pytest.raises(CatalogError, match=f"schema version {migrations.LATEST + 1}") as err:
        Catalog.connect(location)
    assert "Upgrade xclip-search" in (err.value.hint or "")


def test_concurrent_openers_migrate_once(tmp_path: Path, catalog_backend: str | None) -> None:
    location = _location(tmp_path, catalog_backend)
    _make_v1_catalog(location)
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            Catalog.connect(location).close()
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    catalog = Catalog.connect(location)
    assert catalog.get_meta("schema_version") == str(migrations.LATEST)
    catalog.close()


def test_the_index_remembers_its_catalog_without_the_password(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XCLIP_SEARCH_CATALOG", raising=False)
    with IndexWriter(tmp_path, IDENTITY, catalog_url=pg_url) as w:
        _add(w, "/v/a.mp4", 2, seed=1)
    recorded = json.loads((tmp_path / "catalog.json").read_text())
    assert recorded["url"] == without_password(normalize_url(pg_url))
    password = make_url(pg_url).password
    assert make_url(recorded["url"]).password is None
    assert not password or f":{password}@" not in (tmp_path / "catalog.json").read_text()
    assert not (tmp_path / "catalog.sqlite").exists()
    # Found by the directory alone, with the password from PGPASSWORD (libpq's usual way).
    monkeypatch.setenv("PGPASSWORD", make_url(pg_url).password or "")
    snap = Snapshot.open(tmp_path)
    assert snap.catalog.shared and snap.live_ids().tolist() == [1, 2]
    snap.catalog.close()
    # Without a password anywhere, a one-line error says what to set.
    monkeypatch.delenv("PGPASSWORD")
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    if make_url(pg_url).password:
        with pytest.raises(CatalogError, match="Cannot open the catalog") as err:
            Snapshot.open(tmp_path)
        assert "PGPASSWORD" in (err.value.hint or "")


def test_a_catalog_of_another_index_is_refused(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XCLIP_SEARCH_CATALOG", raising=False)
    with IndexWriter(tmp_path / "one", IDENTITY, catalog_url=pg_url) as w:
        _add(w, "/v/a.mp4", 1, seed=1)
    with (
        pytest.raises(CatalogError, match="already holds another index"),
        IndexWriter(tmp_path / "two", IDENTITY, catalog_url=pg_url),
    ):
        pass
    with IndexWriter(tmp_path / "local", IDENTITY) as w:  # SQLite
        _add(w, "/v/a.mp4", 1, seed=1)
    with (
        pytest.raises(CatalogError, match="cannot move to"),
        IndexWriter(tmp_path / "local", IDENTITY, catalog_url=pg_url),
    ):
        pass
    # The recorded id is checked on every open: a directory whose catalog.json names another index's id is refused.
    (tmp_path / "four").mkdir()
    doc = json.loads((tmp_path / "one" / "catalog.json").read_text())
    (tmp_path / "four" / "catalog.json").write_text(json.dumps({**doc, "index_id": "0" * 32}))
    monkeypatch.setenv("XCLIP_SEARCH_CATALOG", pg_url)
    with pytest.raises(CatalogError, match="belongs to another index"):
        Catalog.open(tmp_path / "four")
    Catalog.open(tmp_path / "one").close()


def test_glob_filters_mean_the_same_on_both_backends(catalog_backend: str | None) -> None:
    """SQLite's GLOB decides; the regex PostgreSQL runs (or Python's re, on the SQLite leg) must agree."""
    import re

    cases = {
        "*/matches/*": ["/a/matches/b.mp4", "/matches/x", "/a/Matches/b"],
        "*.webm": ["x.webm", "x.WEBM", "a.webm.mp4", "a(1).webm"],
        "/v/clip?.mp4": ["/v/clip1.mp4", "/v/clip12.mp4", "/v/clip.mp4"],
        "*[0-9].mp4": ["a7.mp4", "a.mp4"],
        "*[^0-9].mp4": ["a7.mp4", "a.mp4"],
        "a+b(c)$.mp4": ["a+b(c)$.mp4", "aab(c)$.mp4"],
        "[*": ["[x", "x"],
    }
    import sqlite3

    conn = sqlite3.connect(":memory:")
    engine = create_engine(catalog_backend) if catalog_backend else None
    for pattern, paths in cases.items():
        regex = re.compile(glob_to_regex(pattern), re.DOTALL)
        for path in paths:
            want = bool(conn.execute("SELECT ? GLOB ?", (path, pattern)).fetchone()[0])
            if engine is None:
                assert bool(regex.search(path)) == want, (pattern, path)
                continue
            with engine.connect() as pg:
                got = pg.execute(select(glob_match(literal(path), pattern))).scalar_one()
            assert got == want, (pattern, path)
    if engine is not None:
        engine.dispose()


# -- several writers on one PostgreSQL catalog --------------------------------------------------------------


def _add(writer: IndexWriter, path: str, n: int, seed: int) -> None:
    from xclip_search.store.catalog import SegmentRecord, VideoRecord

    rng = np.random.default_rng(seed)
    first = writer.reserve_ids(n)
    segs = [
        SegmentRecord(seq=i, start_s=10.0 * i, end_s=10.0 * i + 10, frame_start=0, frame_end=1, id=first + i)
        for i in range(n)
    ]
    v = rng.standard_normal((n, D)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    writer.add(
        VideoRecord(path=path, size=100 + n, mtime_ns=seed, status="indexed"),
        segs,
        v,
        rng.standard_normal((n, N, D)).astype(np.float32),
    )


WRITER = """
import sys, numpy as np
from pathlib import Path
from tests.test_catalog_pg import IDENTITY, _add, segments_of
from xclip_search.store.writer import IndexWriter
directory, paths = Path(sys.argv[1]), sys.argv[2:]
with IndexWriter(directory, IDENTITY) as w:
    for k, path in enumerate(paths):
        _add(w, path, segments_of(path), seed=int(path.rsplit("-", 1)[1].split(".")[0]))
        if k % 2 == 1:
            w.flush()
    w.publish_ann()
print(len(w.dropped))
"""


def segments_of(path: str) -> int:
    return 1 + int(path.rsplit("-", 1)[1].split(".")[0]) % 3


def _check_snapshot(directory: Path, expected: dict[str, int]) -> int:
    """A reader's view is whole: every live segment's vectors are in a published shard, every video complete."""
    snap = Snapshot.open(directory)
    try:
        live = snap.live_ids()
        assert len(np.unique(live)) == len(live)
        if len(live):
            snap.vectors.gather(live)  # raises if a live id is in no shard of this manifest
        per_video = snap.catalog.video_segments([r["id"] for r in snap.catalog.video_table()], snap.generation)
        paths = {r["id"]: r["path"] for r in snap.catalog.video_table()}
        for vid, segs in per_video.items():
            assert len(segs) == expected[paths[vid]], paths[vid]
        return snap.generation
    finally:
        snap.catalog.close()


def test_concurrent_writers_share_one_catalog(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three writer processes over overlapping paths: each file live once, ids unique, readers see whole batches."""
    monkeypatch.setenv("XCLIP_SEARCH_CATALOG", pg_url)
    directory = tmp_path / "idx"
    groups = [[f"/lib/v-{i}.mp4" for i in range(a, a + 14)] for a in (0, 7, 10)]  # overlaps: 7-13, 10-20
    expected = {p: segments_of(p) for g in groups for p in g}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    with IndexWriter(directory, IDENTITY):
        pass  # create the index first so the readers below have a manifest
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(directory), *g], env=env, stdout=subprocess.PIPE, text=True)
        for g in groups
    ]
    seen = set()
    while any(p.poll() is None for p in procs):
        seen.add(_check_snapshot(directory, expected))
    outs = [p.communicate()[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert len(seen) > 1  # the readers really ran while generations were being published
    dropped = sum(int(o.strip().splitlines()[-1]) for o in outs)
    catalog = Catalog.open(directory)
    with catalog.engine.connect() as conn:
        rows = conn.execute(select(videos.c.path, videos.c.id)).all()
        all_segments = conn.execute(select(segments.c.id, segments.c.video_id, segments.c.gen_removed)).all()
    manifest = read_manifest(directory)
    assert manifest.generation == catalog.latest_generation()
    assert sorted(p for p, _ in rows) == sorted(expected)  # every file exactly once
    live = [s for s in all_segments if s.gen_removed is None]
    assert len(live) == sum(expected.values())  # nothing lost, nothing live twice
    # The second writer to commit an overlapping file finds it indexed, identical, and drops its copy: no
    # segment of it was ever committed twice (none retired), and every extra copy was dropped.
    assert len(all_segments) == len(live)
    assert dropped == sum(len(g) for g in groups) - len(expected) == 18
    shard_ids = np.concatenate([np.asarray(s.ids) for s in Snapshot.open(directory).vectors.shards])
    assert len(np.unique(shard_ids)) == len(shard_ids)  # ids unique across every writer's shards
    assert {s.id for s in live} <= set(shard_ids.tolist())
    assert _check_snapshot(directory, expected) == manifest.generation
    snap = Snapshot.open(directory)
    q = snap.vectors.gather_v(np.array([live[0].id]))[0]
    assert snap.coarse(q, 3)[0].segment_id == live[0].id  # search works on the shared index
    assert manifest.ann is not None
    catalog.close()


# -- two real indexer processes -----------------------------------------------------------------------------


def _live_rows(directory: Path) -> list[tuple[str, int, float, float]]:
    snap = Snapshot.open(directory)
    try:
        rows = [r for batch in snap.catalog.iter_segment_rows(snap.generation) for r in batch]
        return sorted((r["path"], r["seq"], r["start_s"], r["end_s"]) for r in rows)
    finally:
        snap.catalog.close()


@pytest.mark.slow  # three model runs: ~1 min on the shared 2-core machine
def test_two_indexers_over_overlapping_folders_share_a_postgresql_catalog(
    tmp_path: Path, library: Path, tiny_ckpt: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`index lib` and `index lib/sub lib/bikes.mp4` at once into one directory and one PostgreSQL catalog:
    the same live segments as one sequential run on SQLite, each file once, ids unique, search works."""
    from click.testing import CliRunner

    from xclip_search.cli import cli

    monkeypatch.delenv("XCLIP_SEARCH_CATALOG", raising=False)
    common = ["--model", str(tiny_ckpt), "--segment-seconds", "1", "--commit-every", "1", "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), "OMP_NUM_THREADS": "1"}
    shared = tmp_path / "shared"
    runs = [[str(library)], [str(library / "sub"), str(library / "bikes.mp4")]]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "xclip_search",
                "index",
                *paths,
                "--index",
                str(shared),
                "--catalog",
                pg_url,
                *common,
                "--json",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for paths in runs
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [3, 0], outs  # exit 3: lib holds a fake .mp4 that fails
    # A file both runs encoded is indexed by the first to commit; the second reports it unchanged.
    assert sum(json.loads(out)["indexed"] for out, _ in outs) == 5, outs
    reference = tmp_path / "reference"
    subprocess.run(
        [sys.executable, "-m", "xclip_search", "index", str(library), "--index", str(reference), *common],
        env=env,
        capture_output=True,
        check=False,
    )
    monkeypatch.setenv("PGPASSWORD", make_url(pg_url).password or "")
    assert _live_rows(shared) == _live_rows(reference)  # nothing lost, nothing live twice
    catalog = Catalog.open(shared)
    with catalog.engine.connect() as conn:
        paths = conn.execute(select(videos.c.path)).scalars().all()
    catalog.close()
    assert len(paths) == len(set(paths)) == 6  # 4 generated videos, bikes.mp4 and the fake .mp4, once each
    ids = np.concatenate([np.asarray(s.ids) for s in Snapshot.open(shared).vectors.shards])
    assert len(np.unique(ids)) == len(ids)
    result = CliRunner().invoke(cli, ["search", "a video", "--index", str(shared), "--top-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["results"]) == 3
