"""Filters: parsing into typed conditions, SQL over whitelisted columns only, and hostile strings."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from xclip_search.checkpoint import ModelIdentity
from xclip_search.cli import cli
from xclip_search.errors import InvalidArgumentError
from xclip_search.filters import SearchFilter, parse_condition
from xclip_search.store.catalog import Catalog
from xclip_search.store.snapshot import Snapshot

from .synthetic import Video, clustered_videos, write_videos

IDENTITY = ModelIdentity(
    source="synthetic", revision=None, config_hash="flt", num_frames=8, image_size=32, embed_dim=8, num_tokens=2
)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Video]]:
    directory = tmp_path_factory.mktemp("filters") / "idx"
    videos = clustered_videos(IDENTITY, 24, segments=3, seed=2, prefix="/lib")
    for i, v in enumerate(videos):
        v.duration = 10.0 * (i + 1)
        v.width, v.height = [(640, 360), (1280, 720), (1920, 1080)][i % 3]
    videos[5].path = "/lib/odd/O'Brien; DROP TABLE videos.mp4"
    write_videos(directory, IDENTITY, videos)
    return directory, videos


def ids_where(directory: Path, flt: SearchFilter) -> set[int]:
    snap = Snapshot.open(directory)
    return set(snap.catalog.segment_ids_where(snap.generation, flt.clause()).tolist())


def expected(videos: list[Video], keep: object) -> set[int]:
    return {i for v in videos if keep(v) for i in v.ids}  # type: ignore[operator]


@pytest.mark.parametrize(
    "text,field,op,value",
    [
        ("duration>=30", "duration", ">=", 30.0),
        ("duration >= 2m", "duration", ">=", 120.0),
        ("duration<1:30", "duration", "<", 90.0),
        ("start>=1h", "start", ">=", 3600.0),
        ("end<=0:01:05.5", "end", "<=", 65.5),
        ("height==720", "height", "=", 720.0),
        ("codec!=h264", "codec", "!=", "h264"),
        ("path~'*/odd/*'", "path", "~", "*/odd/*"),
        ('tag="playing guitar"', "tag", "=", "playing guitar"),
        ("indexed>=2024-05-01", "indexed", ">=", "2024-05-01T00:00:00+00:00"),
        ("indexed<2024-05-01T12:00+02:00", "indexed", "<", "2024-05-01T10:00:00+00:00"),
        ("Video_ID=3", "video_id", "=", 3.0),
    ],
)
def test_conditions_parse_to_typed_values(text: str, field: str, op: str, value: object) -> None:
    cond = parse_condition(text)
    assert (cond.field, cond.op, cond.value) == (field, op, value)


HOSTILE = [
    "duration>=30; DROP TABLE videos",
    "duration>=30 OR 1=1",
    "videos.path=x",
    "path) OR (1=1",
    "__import__('os').system('id')>=1",
    "duration>=1e999",
    "duration>=nan",
    "size>=0x10",
    "tag<cooking",
    "tag=a\x00b",
    "path=\x1b[31mred",
    "indexed>=2024-13-45",
    "indexed=2024-01-01",
    "duration>=",
    ">=30",
    "duration=>30",
    "duration",
    "x" * 5000,
    "fps>=30 --",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_filters_are_one_line_errors(text: str) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        SearchFilter.parse([text])
    message = str(err.value)
    assert message.startswith("Invalid filter") and "\n" not in message and len(message) < 400
    assert all(ch.isprintable() for ch in message)
    assert "SELECT" not in message.upper()


INERT = ["path=x' OR '1'='1", "path~*' OR 1=1 --", "codec=h264'; DELETE FROM segments; --", "tag=x' UNION SELECT 1 --"]


@pytest.mark.parametrize("text", INERT)
def test_sql_in_a_value_is_only_a_value(indexed: tuple[Path, list[Video]], text: str, tmp_path: Path) -> None:
    """Strings that parse (a path or a label may contain anything) reach SQL as bound parameters only."""
    import shutil

    directory = tmp_path / "copy"
    shutil.copytree(indexed[0], directory)
    Catalog.open(directory).ensure_tags_table()
    assert ids_where(directory, SearchFilter.parse([text])) == set()
    with sqlite3.connect(directory / "catalog.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM segments").fetchone()[0] == 72
        assert conn.execute("SELECT count(*) FROM videos").fetchone()[0] == 24


def test_filters_select_what_they_say(indexed: tuple[Path, list[Video]]) -> None:
    directory, videos = indexed
    everything = expected(videos, lambda v: True)
    assert ids_where(directory, SearchFilter()) == everything
    cases = [
        (SearchFilter.parse(["duration>=100"]), lambda v: v.duration >= 100),
        (SearchFilter.parse(["duration>=100", "height>=720"]), lambda v: v.duration >= 100 and v.height >= 720),
        (SearchFilter.parse(path_prefix="/lib/even/"), lambda v: v.path.startswith("/lib/even/")),
        (
            SearchFilter.parse(path_prefix=["/lib/even/topic1", "/lib/odd/topic3"]),
            lambda v: ("topic1/" in v.path and "even" in v.path) or "odd/topic3/" in v.path,
        ),
        (SearchFilter.parse(glob="*/topic[12]/*"), lambda v: "/topic1/" in v.path or "/topic2/" in v.path),
        (SearchFilter.parse(["path=" + videos[5].path]), lambda v: v is videos[5]),
        (SearchFilter.parse(["path!=" + videos[5].path]), lambda v: v is not videos[5]),
        (SearchFilter.parse(["codec=vp9"]), lambda v: False),
    ]
    for flt, keep in cases:
        assert ids_where(directory, flt) == expected(videos, keep), flt.describe()
    starts = SearchFilter.parse(["start>=10", "end<=20"])
    assert ids_where(directory, starts) == {v.ids[1] for v in videos}
    assert ids_where(directory, SearchFilter.parse(indexed_after="2000-01-01")) == everything
    assert ids_where(directory, SearchFilter.parse(indexed_before="2000-01-01")) == set()


def test_a_relative_prefix_means_what_it_means_in_the_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    flt = SearchFilter.parse(path_prefix="clips/")
    assert flt.describe() == [f"path^={tmp_path}{os.sep}clips{os.sep}"]
    home = SearchFilter.parse(path_prefix="~/Videos")
    assert home.describe() == [f"path^={Path('~/Videos').expanduser()}"]
    with pytest.raises(InvalidArgumentError):
        SearchFilter.parse(path_prefix=" ")


def test_tag_filters(indexed: tuple[Path, list[Video]], tmp_path: Path) -> None:
    import shutil

    directory = tmp_path / "tagged"
    shutil.copytree(indexed[0], directory)
    videos = indexed[1]
    catalog = Catalog.open(directory)
    rows = [(videos[0].ids[0], "cooking", 0.9, 0.3), (videos[0].ids[0], "sports", 0.1, 0.2)]
    rows += [(videos[1].ids[2], "cooking", 0.6, 0.25)]
    catalog.save_tags(["cooking", "sports"], [videos[0].ids[0], videos[1].ids[2]], rows)
    assert ids_where(directory, SearchFilter.parse(tags="cooking")) == {videos[0].ids[0], videos[1].ids[2]}
    assert ids_where(directory, SearchFilter.parse(tags=["cooking", "sports"])) == {videos[0].ids[0]}
    assert videos[0].ids[0] not in ids_where(directory, SearchFilter.parse(["tag!=sports"]))
    # Saving the vocabulary again replaces its labels on those segments.
    catalog.save_tags(["cooking", "sports"], [videos[0].ids[0]], [(videos[0].ids[0], "sports", 0.7, 0.3)])
    assert ids_where(directory, SearchFilter.parse(tags="cooking")) == {videos[1].ids[2]}
    assert catalog.tags_of([videos[0].ids[0]])[videos[0].ids[0]][0]["label"] == "sports"


def test_hostile_filter_on_the_command_line_is_one_line(indexed: tuple[Path, list[Video]]) -> None:
    directory, _ = indexed
    for args, needle in (
        (["--filter", "duration>=30; DROP TABLE videos"], "Error: Invalid filter (duration>=30; DROP TABLE videos)"),
        (["--filter", "nosuchfield=1"], "unknown field 'nosuchfield'"),
        (["--indexed-after", "last tuesday"], "is not an ISO date"),
        (["--tag", "cooking"], "Error: This index has no saved tags"),  # checked before any model loads
    ):
        result = CliRunner().invoke(cli, ["search", "anything", "--index", str(directory), *args])
        assert result.exit_code == 1, (args, result.output)
        lines = result.stderr.splitlines()
        assert needle in lines[0] and lines[0].startswith("Error: ") and "Traceback" not in result.stderr, lines
    out = directory.parent / "export-out"
    export = CliRunner().invoke(cli, ["export", "--index", str(directory), "--parquet", str(out), "--filter", "x"])
    assert export.exit_code == 1 and export.stderr.startswith("Error: Invalid filter") and not out.exists()


def test_arguments_are_checked_before_the_model_loads(
    indexed: tuple[Path, list[Video]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad argument is refused at once: loading the model here would fail the test with another error."""

    def no_model(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr("xclip_search.index.load_checkpoint", no_model)
    directory, _ = indexed
    for args, needle in (
        (["search", "x", "--top-k", "0"], "Error: Invalid top-k (0)"),
        (["search", "x", "--top-k", "10", "--candidates", "5"], "Error: Invalid candidates (5)"),
        (["search", "x", "--min-score", "nan"], "Error: Invalid min-score (nan)"),
        (["search", "   "], "Error: Empty query"),
        (["similar", "--video-id", "1", "--top-k", "0"], "Error: Invalid top-k (0)"),
        (
            ["similar", "--video-id", "1", "--at", "-1"],
            "Error: Invalid time (-1.0). It must be 0 or more seconds. (--at)",
        ),
    ):
        result = CliRunner().invoke(cli, [*args, "--index", str(directory)])
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.splitlines()[0].startswith(needle), (args, result.stderr)


def test_a_negated_class_has_the_shell_and_the_sql_spelling() -> None:
    """``[!x]`` (POSIX shell) and ``[^x]`` (SQLite GLOB) negate alike; elsewhere in a class ``!`` is literal."""
    import sqlite3

    from sqlalchemy import literal, select

    from xclip_search.store.sqlglob import glob_match, normalize_glob

    assert normalize_glob("*/[!b]*.mp4") == normalize_glob("*/[^b]*.mp4") == "*/[^b]*.mp4"
    assert normalize_glob("[a!]") == "[a!]" and normalize_glob("[!]x]") == "[^]x]" and normalize_glob("a[!b") == "a[^b"
    conn = sqlite3.connect(":memory:")
    for pattern, path, want in [
        ("/v/[!b]*", "/v/a.mp4", True),
        ("/v/[!b]*", "/v/b.mp4", False),
        ("/v/[^b]*", "/v/b.mp4", False),
        ("/v/[a!]*", "/v/!.mp4", True),
        ("/v/[!b", "/v/[!b", False),  # an unclosed class matches nothing, as SQLite's GLOB
    ]:
        sql = select(glob_match(literal(path), pattern)).compile(compile_kwargs={"literal_binds": True})
        assert bool(conn.execute(str(sql)).fetchone()[0]) == want, (pattern, path)
