"""Cues in the catalog: replacing one source of a video, full-text search on SQLite FTS5 and PostgreSQL.

Every case runs on both backends (`catalog_backend`; PostgreSQL skips without a server): the same query must
find the same cues on a laptop's catalog and on a shared one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from xclip_search.store import fulltext, migrations
from xclip_search.store.catalog import Catalog, meta_table
from xclip_search.store.cues import Cue
from xclip_search.store.location import CatalogLocation, default_url, normalize_url
from xclip_search.store.records import BatchEntry, VideoRecord


def _catalog(tmp_path: Path, backend: str | None) -> Catalog:
    return Catalog.connect(CatalogLocation(normalize_url(backend or default_url(tmp_path))), create=True)


def _video(catalog: Catalog, path: str, generation: int = 1) -> int:
    rec = VideoRecord(path=path, size=1, mtime_ns=1, status="indexed")
    catalog.commit_batch(generation, None, [BatchEntry(rec)], None)
    row = catalog.video_at_path(path)
    assert row is not None
    return row.id


LINES = [
    Cue("The quarterly budget is approved.", 1.0, 3.0, "en", "sidecar"),
    Cue("We meet at the café near the station.", 4.0, 6.5, "en", "sidecar"),
    Cue("Привет, мир! Бюджет утверждён.", 7.0, 9.0, "ru", "sidecar"),
    Cue("東京タワーに行きました", 10.0, 12.0, "ja", "sidecar"),
    Cue("Καλημέρα κόσμε", 13.0, 14.0, "el", "sidecar"),
]


def _search(catalog: Catalog, q: str) -> list[str]:
    query = fulltext.parse_query(q)
    assert query is not None
    return [m.stored.cue.text for m in catalog.search_cues(query, limit=10)]


def test_full_text_search_on_every_script(tmp_path: Path, catalog_backend: str | None) -> None:
    catalog = _catalog(tmp_path, catalog_backend)
    try:
        vid = _video(catalog, "/v/a.mp4")
        assert catalog.replace_cues(vid, "sidecar", LINES, "a.srt:1:1") == len(LINES)
        assert catalog.has_cues()
        assert _search(catalog, "budget") == [LINES[0].text]
        assert _search(catalog, '"quarterly budget"') == [LINES[0].text]
        assert _search(catalog, '"budget quarterly"') == []  # a phrase keeps its order
        assert _search(catalog, "budg*") == [LINES[0].text]  # prefix
        assert _search(catalog, "cafe station") == [LINES[1].text]  # diacritics removed, all words needed
        assert _search(catalog, "café nowhere") == []
        assert sorted(_search(catalog, "budget OR мир")) == sorted([LINES[0].text, LINES[2].text])
        assert _search(catalog, "бюджет") == [LINES[2].text]  # Cyrillic, case-folded
        assert _search(catalog, "タワー") == [LINES[3].text]  # a word inside unspaced Japanese
        assert _search(catalog, "東京") == [LINES[3].text]
        assert _search(catalog, "京東") == []
        assert _search(catalog, "καλημερα") == [LINES[4].text]  # Greek, accent removed
        assert fulltext.parse_query(" ,;- ") is None
    finally:
        catalog.close()


def test_replacing_one_source_keeps_the_others(tmp_path: Path, catalog_backend: str | None) -> None:
    catalog = _catalog(tmp_path, catalog_backend)
    try:
        a, b = _video(catalog, "/v/a.mp4", 1), _video(catalog, "/v/b.mp4", 2)
        catalog.replace_cues(a, "sidecar", LINES[:2], "s1")
        catalog.replace_cues(a, "embedded", [Cue("budget inside", 0.0, 1.0, None, "embedded")], "e1")
        catalog.replace_cues(b, "sidecar", [Cue("another budget", 0.0, 1.0, "en", "sidecar")], "s2")
        catalog.replace_cues(a, "sidecar", [Cue("a new budget line", 2.0, 3.0, "en", "sidecar")], "s3")
        assert sorted(_search(catalog, "budget")) == ["a new budget line", "another budget", "budget inside"]
        assert _search(catalog, "quarterly") == []  # the replaced cues left the full-text index too
        assert catalog.cue_stamps("sidecar") == {a: "s3", b: "s2"}
        assert catalog.cue_stamps("embedded") == {a: "e1"}
        with pytest.raises(ValueError):
            catalog.replace_cues(a, "speech", [LINES[0]], "x")
        catalog.replace_cues(a, "sidecar", [], None)  # forgotten: read afresh next time
        assert catalog.cue_stamps("sidecar") == {b: "s2"}
        assert [c.cue.text for c in catalog.cues_of(a)] == ["budget inside"]
        catalog.commit_batch(3, None, [], None, removed_paths=["/v/b.mp4"])  # a removed video's cues go too
        assert _search(catalog, "budget") == ["budget inside"]
        assert catalog.cue_stamps("sidecar") == {}
        restricted = catalog.search_cues(fulltext.parse_query("budget"), limit=5, video_ids=[b])  # type: ignore[arg-type]
        assert restricted == []
    finally:
        catalog.close()


def test_a_version_4_catalog_gains_cues(tmp_path: Path, catalog_backend: str | None) -> None:
    location = CatalogLocation(normalize_url(catalog_backend or default_url(tmp_path)))
    catalog = Catalog.connect(location, create=True)
    vid = _video(catalog, "/v/a.mp4")
    with catalog.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("DROP TABLE cues_fts")
        conn.exec_driver_sql("DROP TABLE cue_tracks")
        conn.exec_driver_sql("DROP TABLE cues")
        conn.execute(update(meta_table).where(meta_table.c.key == "schema_version").values(value="4"))
    catalog.close()
    catalog = Catalog.connect(location)
    try:
        assert catalog.get_meta("schema_version") == str(migrations.LATEST)
        catalog.replace_cues(vid, "sidecar", LINES[:1], "s")
        assert _search(catalog, "budget") == [LINES[0].text]
    finally:
        catalog.close()
