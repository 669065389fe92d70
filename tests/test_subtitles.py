"""Subtitles end to end: sidecar files and text streams inside containers, indexed, searched and fused.

The library: generated clips (4 s, 25 fps, 1-second fixed segments) with sidecar subtitles (SRT, WebVTT, ASS;
English, Russian) and embedded text streams (SubRip and WebVTT in Matroska, mov_text in MP4; English, French,
Japanese). Expected spans are exact: a cue from 1.2 s to 1.8 s lies in the segment [1, 2).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from indexer import IndexOptions, run_index
from xclip_search import Index
from xclip_search.errors import InvalidArgumentError

SRT_A = """1
00:00:01,200 --> 00:00:01,800
The <i>quarterly budget</i> is approved.

2
00:00:02,500 --> 00:00:03,500
Meet me at the harbor tomorrow.
"""

VTT_B_RU = """WEBVTT

00:00:00.500 --> 00:00:01.500
Привет, мир! Бюджет утверждён.
"""

ASS_B_EN = """[Script Info]
ScriptType: v4.00+

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, Bold, Italic, Alignment, MarginL, MarginR, MarginV
Style: Default,Arial,20,&H00FFFFFF,0,0,2,10,10,10

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:03.10,0:00:03.90,Default,,0,0,0,,{\\i1}Welcome aboard{\\i0}, captain
"""

# name -> (subtitle stream codec or None, language, cues)
EMBEDDED: dict[str, tuple[str | None, str | None, list[tuple[float, float, str]]]] = {
    "a.mp4": (None, None, []),
    "b.mp4": (None, None, []),
    "c.mkv": ("subrip", "eng", [(2.2, 2.9, "The lighthouse keeper waves from the harbor")]),
    "d.mp4": ("mov_text", "jpn", [(0.2, 0.8, "東京タワーに行きました")]),
    "e.mkv": ("webvtt", "fre", [(1.0, 2.0, "Bonjour le monde")]),
    "f.mp4": (None, None, []),
}


def _write_library(root: Path) -> None:
    """Encode in a fresh interpreter (decord's bundled FFmpeg and PyAV's encoders do not mix in one process)."""
    code = (
        "import json, sys; from pathlib import Path\n"
        "from xclip_search.testing import synthetic_frames, write_video\n"
        "root = Path(sys.argv[1])\n"
        "for i, (name, (codec, lang, cues)) in enumerate(sorted(json.loads(sys.argv[2]).items())):\n"
        "    write_video(root / name, synthetic_frames(100, 48, 64, seed=i), subtitles=[tuple(c) for c in cues],\n"
        "                subtitle_codec=codec or 'subrip', subtitle_language=lang)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", code, str(root), json.dumps(EMBEDDED)], check=True, env=env)
    (root / "a.srt").write_text(SRT_A, encoding="utf-8")
    (root / "b.ru.vtt").write_text(VTT_B_RU, encoding="utf-8")
    (root / "b.en.ass").write_text(ASS_B_EN, encoding="utf-8")
    (root / "f.srt").write_bytes(b"\x00\x01 not subtitles at all")  # unparseable: costs its own cues only


@pytest.fixture(scope="module")
def subtitled(tmp_path_factory: pytest.TempPathFactory, tiny_ckpt: Path) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("subtitled")
    lib = base / "library"
    lib.mkdir()
    _write_library(lib)
    index_dir = base / "index"
    report = run_index(
        [str(lib)],
        index_dir,
        model=str(tiny_ckpt),
        options=IndexOptions(segments="fixed", segment_seconds=1, workers=1),
    )
    assert report.to_dict()["indexed"] == 6
    side = report.sidecars
    assert (side.read, side.dropped, side.cues) == (3, 0, 4)  # a, b (two files), f (nothing readable)
    assert [Path(p).name for p, _ in side.failures] == ["f.srt"]
    return lib, index_dir


def _spans(hits: list) -> list[tuple[str, float, float, str]]:  # type: ignore[type-arg]
    return [(Path(h.path).name, h.start, h.end, h.match) for h in hits]


def test_said_phrases_find_their_moments(subtitled: tuple[Path, Path]) -> None:
    _, index_dir = subtitled
    with Index.open(index_dir) as index:
        assert index.info()["cues"] == 7
        speech = index.search('"quarterly budget"', match="speech")
        assert _spans(speech) == [("a.mp4", 1.0, 2.0, "speech")]
        cue = speech[0].cue
        assert cue is not None and (cue.text, cue.start, cue.end, cue.language, cue.source) == (
            "The quarterly budget is approved.",
            1.2,
            1.8,
            None,
            "sidecar",
        )
        assert speech[0].start <= cue.start and cue.end <= speech[0].end
        # Sidecar with a language suffix (Cyrillic), ASS styling removed, embedded streams of three formats.
        assert _spans(index.search("бюджет", match="speech")) == [("b.mp4", 0.0, 2.0, "speech")]
        welcome = index.search("welcome aboard", match="speech")
        assert _spans(welcome) == [("b.mp4", 3.0, 4.0, "speech")] and welcome[0].cue.text == "Welcome aboard, captain"  # type: ignore[union-attr]
        assert welcome[0].cue.language == "en"  # type: ignore[union-attr]
        lighthouse = index.search("lighthouse keep*", match="speech")
        assert _spans(lighthouse) == [("c.mkv", 2.0, 3.0, "speech")]
        assert (lighthouse[0].cue.source, lighthouse[0].cue.language) == ("embedded", "eng")  # type: ignore[union-attr]
        assert _spans(index.search("タワー", match="speech")) == [("d.mp4", 0.0, 1.0, "speech")]
        assert _spans(index.search('"bonjour le monde"', match="speech")) == [("e.mkv", 1.0, 2.0, "speech")]
        # A cue across a segment boundary: the moment spans both segments.
        assert _spans(index.search("harbor tomorrow", match="speech")) == [("a.mp4", 2.0, 4.0, "speech")]
        # Two videos say "harbor": both are found, one hit each.
        assert sorted(n for n, *_ in _spans(index.search("harbor", match="speech"))) == ["a.mp4", "c.mkv"]
        assert index.search("nobody said this", match="speech") == []
        # The X-CLIP score of a moment found by its words is X-CLIP's exact score of its best segment.
        seg = index.segment(speech[0].segment_id)
        exact = index.search('"quarterly budget"', match="visual", per_video=False, top_k=100, candidates=100)
        by_segment = {h.segment_id: h.score for h in exact}
        assert speech[0].score == pytest.approx(by_segment[seg.id], abs=1e-6)
        assert speech[0].fused_score is not None and exact[0].fused_score is None


def test_default_fuses_and_visual_only_queries_rank_as_before(subtitled: tuple[Path, Path]) -> None:
    _, index_dir = subtitled
    with Index.open(index_dir) as index:
        visual = index.search("a small square drifting", match="visual", top_k=6)
        default = index.search("a small square drifting", top_k=6)  # no cue has all these words
        assert [(h.video_id, h.start, h.end, h.score) for h in default] == [
            (h.video_id, h.start, h.end, h.score) for h in visual
        ]
        assert {h.match for h in default} == {"visual"} and all(h.cue is None for h in default)
        # A said phrase, by default: the moment where it is said is first, whatever X-CLIP thinks of it.
        fused = index.search('"quarterly budget"', top_k=6)
        first = fused[0]
        assert Path(first.path).name == "a.mp4" and first.match in ("speech", "both")
        assert first.cue is not None and first.start <= 1.2 and first.end >= 1.8
        assert len({h.video_id for h in fused}) == len(fused)  # still one hit per video
        with pytest.raises(InvalidArgumentError):
            index.search("x", match="sound")


def test_a_moment_shown_and_said_is_one_hit_ranked_first(subtitled: tuple[Path, Path]) -> None:
    _, index_dir = subtitled
    with Index.open(index_dir) as index:
        # All segments: c.mkv's segment [2, 3) is both an X-CLIP hit and where "lighthouse" is said.
        visual = index.search("lighthouse", match="visual", per_video=False, top_k=100, candidates=100)
        said = next(h for h in visual if Path(h.path).name == "c.mkv" and h.start == 2.0)
        fused = index.search("lighthouse", per_video=False, top_k=100, candidates=100)
        assert (Path(fused[0].path).name, fused[0].start, fused[0].end, fused[0].match) == ("c.mkv", 2.0, 3.0, "both")
        assert fused[0].score == said.score  # X-CLIP's own score, untouched
        assert len(fused) == len(visual)  # the said moment merged into its X-CLIP hit: no extra row
        assert [h.segment_id for h in fused[1:]] == [h.segment_id for h in visual if h.segment_id != said.segment_id]


def test_filters_apply_to_said_moments(subtitled: tuple[Path, Path]) -> None:
    _, index_dir = subtitled
    with Index.open(index_dir) as index:
        assert sorted(Path(h.path).name for h in index.search("harbor", match="speech", where="path~*.mkv")) == [
            "c.mkv"
        ]
        # The filter keeps segments from 3 s on: a.mp4's cue (2.5-3.5 s) keeps its second segment only, c.mkv's
        # (2.2-2.9 s) lies in a segment the filter drops.
        assert _spans(index.search("harbor", match="speech", where="start>=3")) == [("a.mp4", 3.0, 4.0, "speech")]
        assert index.search("lighthouse", match="speech", where="start>=3") == []


def test_sidecars_follow_the_files_without_reencoding(
    subtitled: tuple[Path, Path], tmp_path: Path, tiny_ckpt: Path
) -> None:
    lib0, index0 = subtitled
    lib, index_dir = tmp_path / "library", tmp_path / "index"
    shutil.copytree(lib0, lib)
    run_index([str(lib)], index_dir, model=str(tiny_ckpt), options=IndexOptions(segments="fixed", segment_seconds=1))
    with Index.open(index_dir) as index:
        before = {v.path: [s.id for s in index.segments_of(v.id)] for v in index.catalog.videos_by_id()}
    # Unchanged: nothing read again.
    again = run_index([str(lib)], index_dir, options=IndexOptions(segments="fixed", segment_seconds=1))
    assert (again.sidecars.read, again.sidecars.dropped) == (0, 0) and again.to_dict()["indexed"] == 0
    # A changed sidecar, one added, one removed: that text only; no video is re-encoded.
    (lib / "a.srt").write_text(SRT_A.replace("quarterly budget", "annual report"), encoding="utf-8")
    (lib / "e.srt").write_text("1\n00:00:03,000 --> 00:00:03,500\nAu revoir\n", encoding="utf-8")
    (lib / "b.ru.vtt").unlink()
    (lib / "b.en.ass").unlink()
    changed = run_index([str(lib)], index_dir, options=IndexOptions(segments="fixed", segment_seconds=1))
    assert changed.to_dict()["indexed"] == 0 and changed.to_dict()["sidecars"] == {
        "read": 2,
        "dropped": 1,
        "cues": 3,
        "failed": 0,
    }
    with Index.open(index_dir) as index:
        after = {v.path: [s.id for s in index.segments_of(v.id)] for v in index.catalog.videos_by_id()}
        assert after == before
        assert index.search("quarterly", match="speech") == []
        assert _spans(index.search('"annual report"', match="speech")) == [("a.mp4", 1.0, 2.0, "speech")]
        assert index.search("бюджет", match="speech") == []
        # e.mkv keeps its embedded line and gains the sidecar's.
        e = next(v for v in index.catalog.videos_by_id() if v.path.endswith("e.mkv"))
        assert [(c.text, c.source) for c in index.cues_of(e.id)] == [
            ("Bonjour le monde", "embedded"),
            ("Au revoir", "sidecar"),
        ]
        vtt = index.subtitles_vtt(e.id)
        assert vtt.startswith("WEBVTT\n") and "00:00:01.000 --> 00:00:02.000\nBonjour le monde" in vtt
    assert index0.exists()


def test_the_server_searches_by_words_and_serves_webvtt(subtitled: tuple[Path, Path]) -> None:
    from .test_serve_api import make_client

    _, index_dir = subtitled
    with make_client(index_dir) as client:
        r = client.get("/api/search", params={"q": "Бюджет", "match": "speech"})
        assert r.status_code == 200, r.text
        hit = r.json()["results"][0]
        assert (hit["name"], hit["start"], hit["end"], hit["match"]) == ("b.mp4", 0.0, 2.0, "speech")
        assert hit["cue"] == {
            "text": "Привет, мир! Бюджет утверждён.",
            "start": 0.5,
            "end": 1.5,
            "language": "ru",
            "source": "sidecar",
        }
        assert client.get("/api/search", params={"q": "x", "match": "sound"}).status_code == 422
        vtt = client.get(hit["subtitles_url"])
        assert vtt.status_code == 200 and vtt.headers["content-type"].startswith("text/vtt")
        assert vtt.text.splitlines()[:4] == [
            "WEBVTT",
            "",
            "00:00:00.500 --> 00:00:01.500",
            "Привет, мир! Бюджет утверждён.",
        ]
        assert "Welcome aboard, captain" in vtt.text
        assert client.get("/api/videos/999999/subtitles.vtt").status_code == 404


def test_cues_export_as_parquet(subtitled: tuple[Path, Path], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    _, index_dir = subtitled
    with Index.open(index_dir) as index:
        report = index.export_parquet(tmp_path / "all", include_z=False)
        some = index.export_parquet(tmp_path / "mkv", include_z=False, where="path~*.mkv")
    assert report.cues == 7 and "cues.parquet" in report.files
    rows = pq.read_table(tmp_path / "all" / "cues.parquet").to_pylist()
    assert set(rows[0]) == {"cue_id", "video_id", "start_s", "end_s", "text", "language", "source"}
    assert {(r["text"], r["source"], r["language"]) for r in rows} >= {
        ("Bonjour le monde", "embedded", "fre"),
        ("東京タワーに行きました", "embedded", "jpn"),
        ("Привет, мир! Бюджет утверждён.", "sidecar", "ru"),
    }
    only = pq.read_table(tmp_path / "mkv" / "cues.parquet").to_pylist()
    assert sorted(r["text"] for r in only) == ["Bonjour le monde", "The lighthouse keeper waves from the harbor"]
    assert some.cues == 2
