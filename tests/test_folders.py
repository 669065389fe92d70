"""``tag`` and ``similar`` take folders: walked like ``index`` (same extensions and skip rules), bad files listed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from indexer.pipeline import IndexOptions, run_index
from indexer.walk import video_files
from xclip_search.cli import cli

from .conftest import REAL_CLIP


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture()
def uploads(tmp_path: Path, generated_videos: dict[str, Path]) -> Path:
    """good videos at two depths, a broken .mp4, a non-video file and a hard link to a good video."""
    root = tmp_path / "new-uploads"
    (root / "sub").mkdir(parents=True)
    shutil.copy(REAL_CLIP, root / "bikes.mp4")
    shutil.copy(generated_videos["landscape_h264.mp4"], root / "sub" / "landscape.mp4")
    (root / "broken.mp4").write_text("not a video\n")
    (root / "notes.txt").write_text("not a video either\n")
    os.link(root / "bikes.mp4", root / "sub" / "same-bikes.mkv")
    return root


def test_video_files_sees_what_an_index_run_sees(uploads: Path, tmp_path: Path, tiny_ckpt: Path) -> None:
    files, issues = video_files([uploads])
    report = run_index([uploads], tmp_path / "idx", model=str(tiny_ckpt), options=IndexOptions(workers=0))
    seen = {o.path for o in report.outcomes}
    assert set(files) | {i.path for i in issues} == seen
    assert files == [str(uploads / "bikes.mp4"), str(uploads / "broken.mp4"), str(uploads / "sub" / "landscape.mp4")]
    assert [(i.path, i.status) for i in issues] == [(str(uploads / "sub" / "same-bikes.mkv"), "skipped")]


def test_tag_a_folder_tags_every_video_and_lists_the_bad_ones(uploads: Path, tiny_ckpt: Path) -> None:
    result = run("tag", str(uploads), "--model", str(tiny_ckpt), "--labels", "bikes,a square", "--json")
    assert result.exit_code == 3, result.stderr  # broken.mp4 failed; the others were still tagged
    data = json.loads(result.stdout)
    paths = [r["path"] for r in data["results"]]
    assert sorted(set(paths)) == [str(uploads / "bikes.mp4"), str(uploads / "sub" / "landscape.mp4")]
    assert paths == sorted(paths, key=lambda p: p.count("/"))  # walk order: the folder's files, then sub/
    failed = {f["path"]: f for f in data["failed"]}
    assert failed[str(uploads / "broken.mp4")]["status"] == "failed"
    assert failed[str(uploads / "sub" / "same-bikes.mkv")]["status"] == "skipped"
    assert "same file as" in failed[str(uploads / "sub" / "same-bikes.mkv")]["reason"]
    assert not any("notes.txt" in p for p in [*paths, *failed])
    # The folder gives the same labels as the files named one by one.
    alone = run("tag", str(uploads / "bikes.mp4"), "--model", str(tiny_ckpt), "--labels", "bikes,a square", "--json")
    assert alone.exit_code == 0
    assert json.loads(alone.stdout)["results"] == [r for r in data["results"] if r["path"].endswith("/bikes.mp4")]


def test_tag_an_empty_folder_says_so(tmp_path: Path, tiny_ckpt: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run("tag", str(tmp_path / "empty"), "--model", str(tiny_ckpt), "--labels", "a,b")
    assert result.exit_code == 0 and "No videos found" in result.stderr


def test_similar_to_a_folder_gives_each_video_its_results(uploads: Path, tmp_path: Path, tiny_ckpt: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(REAL_CLIP, lib / "bikes.mp4")
    idx = tmp_path / "idx"
    # fixed 2 s windows (recorded in the index), so --at 3 names the window 2-4 s in the example and the copy
    options = IndexOptions(segments="fixed", segment_seconds=2, workers=1)
    run_index([lib], idx, model=str(tiny_ckpt), options=options)
    args = ["similar", str(uploads), "--index", str(idx), "--at", "3", "--segment-seconds", "2", "--all-segments"]
    result = run(*args, "--json")
    assert result.exit_code == 3, result.stderr
    data = json.loads(result.stdout)
    sources = [e["example"]["path"] for e in data["examples"]]
    assert sources == [str(uploads / "bikes.mp4")]  # landscape.mp4 is 2.4 s long: --at 3 fails for it alone
    best = data["examples"][0]["results"][0]  # the same frames as the indexed copy: cosine 1 at the same time
    assert (best["path"], best["start"], best["end"]) == (str(lib / "bikes.mp4"), 2.0, 4.0)
    assert best["score"] == pytest.approx(1.0, abs=1e-5)
    assert {f["path"]: f["status"] for f in data["failed"]} == {
        str(uploads / "broken.mp4"): "failed",
        str(uploads / "sub" / "landscape.mp4"): "failed",
        str(uploads / "sub" / "same-bikes.mkv"): "skipped",
    }
    assert any("spans 0.0-2.4 s" in f["reason"] for f in data["failed"])
    whole = json.loads(run("similar", str(uploads), "--index", str(idx), "--json").stdout)
    assert [e["example"]["path"] for e in whole["examples"]] == [
        str(uploads / "bikes.mp4"),
        str(uploads / "sub" / "landscape.mp4"),
    ]
    human = run(*args)
    assert human.exit_code == 3 and human.stdout.startswith(f"Like {uploads / 'bikes.mp4'}:")
    assert f"failed: {uploads / 'broken.mp4'}" in human.stderr
