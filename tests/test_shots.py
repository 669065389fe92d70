"""Shot-aligned segments: cut detection, shot planning, the recorded segmentation settings, merging that stops at
cuts, and `xclip-search eval` on generated multi-scene videos (issue 15; settings from issue 13)."""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from indexer.segments import plan_shots, plan_video
from indexer.shots import Cut, detect_cuts
from xclip_search.cli import cli
from xclip_search.errors import InvalidArgumentError
from xclip_search.store.segmentation import FIXED, SHOTS, Segmentation

from .conftest import REAL_CLIP, REAL_CLIP_HD
from .synthetic import Video, clustered_videos, unit, write_videos

BIKES_CUTS = [30, 76, 137, 187, 242]  # tests/data/bikes.mp4 is an edited film: its cuts, checked by eye


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def matched(found: list[int], truth: list[int], slack: int = 1) -> int:
    left = list(truth)
    hits = 0
    for f in found:
        t = next((t for t in left if abs(t - f) <= slack), None)
        if t is not None:
            left.remove(t)
            hits += 1
    return hits


@pytest.fixture(scope="module")
def scene_library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[list[int]]]:
    from xclip_search.demo.scenelib import write_scene_library

    lib = tmp_path_factory.mktemp("scenes") / "library"
    truth, cuts = write_scene_library(lib, 6, seed=15)
    return lib, truth, cuts


# -- detection ---------------------------------------------------------------------------------------------


def test_cuts_of_generated_scene_videos(scene_library: tuple[Path, Path, list[list[int]]]) -> None:
    lib, _, cuts = scene_library
    found_total = true_total = hits = 0
    for i, truth in enumerate(cuts):
        found = [c.frame for c in detect_cuts(str(lib / f"scenes-{i + 1:02d}.mp4"))]
        hits += matched(found, truth)
        found_total += len(found)
        true_total += len(truth)
    recall, precision = hits / true_total, hits / max(found_total, 1)
    assert true_total >= 15
    assert recall >= 0.95 and precision >= 0.95, (recall, precision)


def test_cuts_of_real_footage_joined_from_real_clips(tmp_path: Path) -> None:
    import av
    from PIL import Image

    from xclip_search.demo.clips import write_mp4

    def frames(path: Path) -> list[np.ndarray]:
        with av.open(str(path)) as c:
            return [
                np.asarray(Image.fromarray(f.to_ndarray(format="rgb24")).resize((320, 136))) for f in c.decode(video=0)
            ]

    bikes, bunny = frames(REAL_CLIP), frames(REAL_CLIP_HD)
    joined = tmp_path / "joined.mp4"
    write_mp4(joined, np.stack(bikes + bunny + bikes[:60]), fps=25.0)
    n1, n2 = len(bikes), len(bikes) + len(bunny)
    truth = [*BIKES_CUTS, n1, n2, n2 + BIKES_CUTS[0]]
    found = [c.frame for c in detect_cuts(str(joined))]
    assert matched(found, truth) == len(truth) == len(found), found
    # The original files: bikes' own cuts, and none in the one-shot animation clip.
    assert [c.frame for c in detect_cuts(str(REAL_CLIP))] == BIKES_CUTS
    assert detect_cuts(str(REAL_CLIP_HD)) == []


# -- planning -----------------------------------------------------------------------------------------------


def test_long_shots_split_into_near_equal_windows_and_never_span_a_cut() -> None:
    settings = Segmentation(segment_seconds=10)
    plans = plan_shots(25 * 60, 25.0, [Cut(25 * 4, 40.0), Cut(25 * 27, 40.0)], settings)
    spans = [(p.start_s, p.end_s, p.shot) for p in plans]
    # 4 s shot; 23 s shot -> 3 windows of 7.67 s; 33 s shot -> 4 windows of 8.25 s
    assert spans[0] == (0.0, 4.0, 0)
    assert [s[2] for s in spans] == [0, 1, 1, 1, 2, 2, 2, 2]
    assert all(e - s <= 10.0 for s, e, _ in spans)
    assert {round(e - s, 2) for s, e, shot in spans if shot == 1} == {7.68, 7.64}
    assert plans[-1].frame_end == 25 * 60 and all(a.frame_end == b.frame_start for a, b in itertools.pairwise(plans))
    assert {p.start_s for p in plans} >= {4.0, 27.0}  # every cut is a segment boundary


def test_short_shots_join_a_neighbour_across_the_weaker_cut() -> None:
    settings = Segmentation(segment_seconds=10, min_shot_seconds=1.0)
    # A 0.4 s flash between two shots: the weaker of its two cuts goes.
    plans = plan_shots(25 * 8, 25.0, [Cut(100, 50.0), Cut(110, 20.0)], settings)
    assert [(p.frame_start, p.frame_end) for p in plans] == [(0, 100), (100, 200)]
    plans = plan_shots(25 * 8, 25.0, [Cut(100, 20.0), Cut(110, 50.0)], settings)
    assert [(p.frame_start, p.frame_end) for p in plans] == [(0, 110), (110, 200)]


def test_without_cuts_a_video_is_near_equal_windows_and_the_cap_holds() -> None:
    plans = plan_shots(25 * 25, 25.0, [], Segmentation(segment_seconds=10))
    assert [round(p.end_s - p.start_s, 2) for p in plans] == [8.32, 8.36, 8.32] and {p.shot for p in plans} == {0}
    capped = plan_shots(25 * 3600, 25.0, [Cut(25 * k, 30.0) for k in range(5, 3600, 5)], Segmentation(max_segments=50))
    assert len(capped) <= 50 and capped[-1].frame_end == 25 * 3600
    assert plan_video(250, 25.0, Segmentation(segment_seconds=0), [Cut(100, 30.0)])[0].frame_end == 250
    fixed = plan_video(250, 25.0, Segmentation(mode=FIXED, segment_seconds=5), [Cut(100, 30.0)])
    assert [(p.frame_start, p.shot) for p in fixed] == [(0, None), (125, None)]


@pytest.mark.parametrize(
    "fields",
    [
        {"segment_seconds": math.nan},
        {"segment_seconds": math.inf},
        {"segment_seconds": -1.0},
        {"segment_seconds": 0.01},
        {"min_shot_seconds": math.nan},
        {"max_segments": 0},
        {"mode": "scenes"},
    ],
)
def test_one_validation_refuses_nan_infinity_and_out_of_range(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        Segmentation(**fields)  # type: ignore[arg-type]


def test_the_cli_refuses_nan_in_one_line_before_loading_anything(tmp_path: Path) -> None:
    for args in (
        ["index", str(REAL_CLIP), "--index", str(tmp_path / "i")],
        ["tag", str(REAL_CLIP), "--model", "demo", "--labels", "a,b"],
    ):
        result = CliRunner().invoke(cli, [*args, "--segment-seconds", "nan"])
        assert result.exit_code == 1 and "Invalid segment length (nan s)" in result.stderr
        assert "Traceback" not in result.output
    assert not (tmp_path / "i").exists()


# -- recorded settings ----------------------------------------------------------------------------------------


def test_settings_are_recorded_shown_and_enforced(tmp_path: Path, tiny_ckpt: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "bikes.mp4").write_bytes(REAL_CLIP.read_bytes())
    idx = str(tmp_path / "idx")
    result = run("index", str(lib), "--index", idx, "--model", str(tiny_ckpt), "--segment-seconds", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["segments"] == 7  # shots 0-1.2, 1.2-3.04 | 3.04-5.48 (2) | 5.48-7.48 | 7.48-10 (2)
    info = json.loads(run("info", "--index", idx, "--json").stdout)
    assert info["segmentation"] == {
        "mode": SHOTS,
        "segment_seconds": 2.0,
        "min_shot_seconds": 1.0,
        "max_segments": 360,
        "recorded": True,
    }
    assert "shots (split into windows of at most 2 s" in run("info", "--index", idx).stdout
    # A later run without options uses the record; asking for other settings is refused in one line.
    (lib / "again.mp4").write_bytes(REAL_CLIP.read_bytes())
    refused = CliRunner().invoke(cli, ["index", str(lib), "--index", idx, "--segments", "fixed"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "refusing mode 'fixed' (recorded: 'shots')" in refused.stderr and "at most 2 s" in refused.stderr
    refused = CliRunner().invoke(cli, ["index", str(lib), "--index", idx, "--segment-seconds", "10"])
    assert refused.exit_code == 1 and "segment_seconds 10.0 (recorded: 2.0)" in refused.stderr
    again = run("index", str(lib), "--index", idx, "--segment-seconds", "2", "--json")
    assert json.loads(again.stdout)["segments"] == 7  # the new copy is cut the same way
    # tag uses the index's segmentation for new files: the same 7 segments
    tagged = run("tag", str(REAL_CLIP), "--index", idx, "--labels", "a,b", "--json")
    assert [(r["start"], r["end"]) for r in json.loads(tagged.stdout)["results"]][:3] == [
        (0.0, 1.2),
        (1.2, 3.04),
        (3.04, 4.24),
    ]


def test_an_index_from_before_the_record_reads_as_fixed_windows(tmp_path: Path) -> None:
    from xclip_search.checkpoint import ModelIdentity

    identity = ModelIdentity(
        source="x", revision=None, config_hash="h", num_frames=8, image_size=32, embed_dim=8, num_tokens=4
    )
    idx = tmp_path / "idx"
    write_videos(idx, identity, clustered_videos(identity, 2))
    info = json.loads(run("info", "--index", str(idx), "--json").stdout)
    assert info["segmentation"]["mode"] == FIXED and info["segmentation"]["recorded"] is False
    assert "not recorded" in run("info", "--index", str(idx)).stdout


# -- merging ------------------------------------------------------------------------------------------------


def test_a_hit_widens_within_its_shot_but_never_across_a_cut(tmp_path: Path, checkpoint) -> None:  # type: ignore[no-untyped-def]
    from xclip_search import Index
    from xclip_search.encoder import XClipEncoder
    from xclip_search.prompting import PromptScorer

    identity = checkpoint.identity
    d, n = identity.embed_dim, identity.num_tokens
    t = XClipEncoder(checkpoint).encode_texts(["a bike"])
    rng = np.random.default_rng(3)
    pool_v, pool_z = unit(rng.standard_normal((500, d))), rng.standard_normal((500, n, d)).astype(np.float32)
    order = np.argsort(-PromptScorer(checkpoint.model).score(pool_v, pool_z, t)[:, 0])
    best, worst = order[0], order[-1]
    pick = [worst, best, best, best, worst]
    # Segments 1-3 score the same, but a cut lies between 2 and 3.
    cut = Video("/v/cut.mp4", v=pool_v[pick], z=pool_z[pick], shots=[0, 0, 0, 1, 1])
    same = Video("/v/same.mp4", v=pool_v[pick], z=pool_z[pick], shots=[0, 0, 0, 0, 0])
    idx = tmp_path / "idx"
    write_videos(idx, identity, [cut, same])
    with Index.open(idx) as index:
        hits = {h.path: h for h in index.search("a bike", top_k=2)}
    assert (hits[cut.path].start, hits[cut.path].end) == (10.0, 30.0)
    assert (hits[same.path].start, hits[same.path].end) == (10.0, 40.0)


def test_catalogs_migrate_to_segment_shots(tmp_path: Path) -> None:
    from xclip_search.checkpoint import ModelIdentity
    from xclip_search.store.catalog import Catalog

    identity = ModelIdentity(
        source="x", revision=None, config_hash="h", num_frames=8, image_size=32, embed_dim=8, num_tokens=4
    )
    idx = tmp_path / "idx"
    write_videos(idx, identity, clustered_videos(identity, 1))
    db = sqlite3.connect(idx / "catalog.sqlite")
    db.execute("ALTER TABLE segments DROP COLUMN shot")
    db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    catalog = Catalog.open(idx)
    try:
        rows = catalog.video_segments([1], catalog.latest_generation())[1]
        assert rows and all(r["shot"] is None for r in rows)
    finally:
        catalog.close()


# -- done when: moments match scenes ----------------------------------------------------------------------------


def test_top_hits_match_the_scenes_of_multi_scene_videos(
    tmp_path: Path, scene_library: tuple[Path, Path, list[list[int]]]
) -> None:
    """Default settings (shots) with the demo model: the top hit for each scene's caption within its video
    overlaps the scene with mean temporal IoU >= 0.7; fixed 10 s windows on the same videos score far lower."""
    lib, truth, _ = scene_library
    ious = {}
    for mode in (SHOTS, FIXED):
        idx = str(tmp_path / mode)
        extra = ["--segments", "fixed"] if mode == FIXED else []
        result = run("index", str(lib), "--index", idx, "--model", "demo", *extra, "--json")
        assert result.exit_code == 0, result.stderr
        report = json.loads(run("eval", str(truth), "--index", idx, "--json").stdout)
        assert report["queries"] == report["with_spans"] >= 15
        ious[mode] = report["stages"]["rerank"]["mean_iou"]
    assert ious[SHOTS] >= 0.7, ious
    assert ious[FIXED] < ious[SHOTS] - 0.2, ious


def test_a_malformed_ground_truth_is_a_one_line_error_naming_the_line(tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    truth.write_text(
        '{"query": "a", "relevant": ["x.mp4"]}\n{"query": "b", "relevant": [{"path": "y.mp4", "start": 3}]}\n'
    )
    result = CliRunner().invoke(cli, ["eval", str(truth), "--index", str(tmp_path / "none")])
    assert result.exit_code == 1 and "line 2" in result.stderr and "start" in result.stderr
    assert "Traceback" not in result.output


def test_every_codec_indexes_in_shots_mode_with_shots_recorded(tmp_path: Path, tiny_ckpt: Path, library: Path) -> None:
    """The default (shots) on the mixed library: H.264, VP9, MPEG-4, MJPEG (yuvj420p planes read in place), and
    an RGB (PNG) file whose frames go through FFmpeg's scaler instead; every readable file is indexed."""
    import av

    from indexer import IndexOptions, run_index
    from xclip_search.store.catalog import Catalog

    rgb = library / "rgb_png.mov"
    with av.open(str(rgb), mode="w") as container:
        stream = container.add_stream("png", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "rgb24"
        for i in range(30):
            frame = np.full((48, 64, 3), 40 if i < 15 else 220, np.uint8)  # a cut at frame 15
            frame[:, (i * 2) % 60 : (i * 2) % 60 + 4] = 128
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert [c.frame for c in detect_cuts(str(rgb))] == [15]
    idx = tmp_path / "idx"
    report = run_index([library], idx, model=str(tiny_ckpt), options=IndexOptions(workers=1, min_shot_seconds=0.5))
    by_name = {Path(o.path).name: o for o in report.outcomes}
    assert {n for n, o in by_name.items() if o.status == "indexed"} == {
        "landscape_h264.mp4",
        "portrait_vp9.webm",
        "square_mpeg4.avi",
        "short_mjpeg.mov",
        "bikes.mp4",
        "rgb_png.mov",
    }
    assert by_name["bikes.mp4"].segments == 5 and by_name["rgb_png.mov"].segments == 2
    catalog = Catalog.open(idx)
    try:
        rows = [
            r for segs in catalog.video_segments(list(range(1, 20)), catalog.latest_generation()).values() for r in segs
        ]
        assert rows and all(r["shot"] is not None for r in rows)
    finally:
        catalog.close()
