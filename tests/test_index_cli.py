"""The index command's run-management surface: dry run, failures listing, human summary and exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from xclip_search.cli import cli

from .conftest import REAL_CLIP


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture()
def lib(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    root.mkdir()
    shutil.copy(REAL_CLIP, root / "bikes.mp4")
    (root / "broken.mp4").write_bytes(b"\x00" * 1000)
    return root


def test_dry_run_estimates_and_writes_nothing(tmp_path: Path, tiny_ckpt: Path, lib: Path) -> None:
    idx = tmp_path / "idx"
    result = run("index", str(lib), "--index", str(idx), "--model", str(tiny_ckpt), "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dry_run"] is True and report["to_index"] == 2 and report["unchanged"] == 0
    assert report["segments"] == 1  # bikes: 10 s is one 10 s segment; broken.mp4 fails its probe
    actions = {Path(f["path"]).name: f["action"] for f in report["files"]}
    assert actions == {"bikes.mp4": "index", "broken.mp4": "failed"}
    assert report["estimate"]["seconds"] > 0 and report["estimate"]["bytes"] > 0
    assert not idx.exists()

    human = run("index", str(lib), "--index", str(idx), "--model", str(tiny_ckpt), "--dry-run")
    assert "Would index 2 file(s)" in human.stdout and "Estimate:" in human.stdout


def test_failures_command_and_rerun_summary(tmp_path: Path, tiny_ckpt: Path, lib: Path) -> None:
    idx = tmp_path / "idx"
    first = run("index", str(lib), "--index", str(idx), "--model", str(tiny_ckpt), "--workers", "1")
    assert first.exit_code == 3
    assert "failed: " in first.stderr and "broken.mp4" in first.stderr
    listed = run("failures", "--index", str(idx), "--json")
    (item,) = json.loads(listed.stdout)["failures"]
    assert item["path"] == str(lib / "broken.mp4") and item["status"] == "failed"
    assert "not a readable video" in item["reason"]
    assert "broken.mp4" in run("failures", "--index", str(idx)).stdout

    # A nightly re-run: nothing failed *now*, but broken.mp4 is still not indexed, and the report and the exit
    # code say so (cron hears about it every night until it is fixed, deleted or retried).
    again = run("index", str(lib), "--index", str(idx), "--json")
    assert again.exit_code == 3
    report = json.loads(again.stdout)
    assert (report["unchanged"], report["failed"], report["still_failed"], report["still_skipped"]) == (2, 0, 1, 0)
    assert report["failures"] == [] and [f["path"] for f in report["still_failures"]] == [str(lib / "broken.mp4")]
    assert "not a readable video" in report["still_failures"][0]["reason"]
    human = run("index", str(lib), "--index", str(idx))
    assert human.exit_code == 3 and "0 failed" in human.stdout and "1 still failed" in human.stdout
    assert f"still failed: {lib / 'broken.mp4'}: " in human.stderr

    # Fixed in place: re-indexed, nothing is failed any more.
    shutil.copy(REAL_CLIP, lib / "broken.mp4")
    fixed = run("index", str(lib), "--index", str(idx), "--json")
    assert fixed.exit_code == 0, fixed.stderr
    assert (json.loads(fixed.stdout)["indexed"], json.loads(fixed.stdout)["still_failed"]) == (1, 0)


def test_a_failure_deleted_and_pruned_is_no_longer_reported(tmp_path: Path, tiny_ckpt: Path, lib: Path) -> None:
    idx = tmp_path / "idx"
    assert run("index", str(lib), "--index", str(idx), "--model", str(tiny_ckpt), "--workers", "1").exit_code == 3
    (lib / "broken.mp4").unlink()
    pruned = run("index", str(lib), "--index", str(idx), "--prune", "--json")
    assert pruned.exit_code == 0, pruned.stderr
    report = json.loads(pruned.stdout)
    assert (report["removed"], report["still_failed"], report["unchanged"]) == (1, 0, 1)


def test_still_skipped_files_are_reported_without_changing_the_exit_code(
    tmp_path: Path, tiny_ckpt: Path, lib: Path
) -> None:
    idx = tmp_path / "idx"
    (lib / "broken.mp4").unlink()
    (lib / "copy.mp4").write_bytes(REAL_CLIP.read_bytes() + b"\x00")  # another file (not a duplicate), same 10 s
    args = ["--index", str(idx), "--max-duration", "5", "--json"]
    first = run("index", str(lib), "--model", str(tiny_ckpt), "--workers", "1", *args)
    assert first.exit_code == 0 and json.loads(first.stdout)["skipped"] == 2  # over the limit: a rule, not a fault
    again = run("index", str(lib), *args)
    assert again.exit_code == 0
    report = json.loads(again.stdout)
    assert (report["skipped"], report["still_skipped"], report["still_failed"]) == (0, 2, 0)
    assert {f["status"] for f in report["still_failures"]} == {"skipped"}
    assert "exceeds the limit of 5 s" in report["still_failures"][0]["reason"]


def test_a_run_that_finds_no_video_says_so_and_creates_nothing(tmp_path: Path, tiny_ckpt: Path) -> None:
    empty, idx = tmp_path / "empty", tmp_path / "idx"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a video")
    for extra in ([], ["--dry-run"], ["--prune", "--json"]):
        result = run("index", str(empty), "--index", str(idx), "--model", str(tiny_ckpt), *extra)
        assert result.exit_code == 1 and result.stdout == ""
        assert result.stderr.startswith(f"Error: No video files under {empty}; nothing was indexed\n")
        assert not idx.exists()


def test_an_emptied_folder_is_pruned_with_prune_and_refused_without(tmp_path: Path, tiny_ckpt: Path, lib: Path) -> None:
    from xclip_search import Index

    idx = tmp_path / "idx"
    run("index", str(lib), "--index", str(idx), "--model", str(tiny_ckpt), "--workers", "1")
    for f in lib.iterdir():
        f.unlink()
    # Without --prune nothing would happen: refused, and the hint says how to remove what was there.
    plain = run("index", str(lib), "--index", str(idx), "--json")
    assert plain.exit_code == 1 and "No video files under" in plain.stderr
    assert "2 video(s) indexed there are gone" in plain.stderr and "--prune" in plain.stderr
    with Index.open(idx) as index:
        assert {h.path for h in index.search("a bike", top_k=5)} == {str(lib / "bikes.mp4")}
    # With --prune, everything deleted is a legitimate nightly run: every row under the folder is retired.
    pruned = run("index", str(lib), "--index", str(idx), "--prune", "--json")
    assert pruned.exit_code == 0, pruned.stderr
    report = json.loads(pruned.stdout)
    assert (report["removed"], report["indexed"], report["still_failed"]) == (2, 0, 0)
    with Index.open(idx) as index:
        assert index.search("a bike", top_k=5) == [] and index.info()["videos"]["indexed"] == 0
    # Nothing left to prune: the next run says the folder is empty.
    assert run("index", str(lib), "--index", str(idx), "--prune").exit_code == 1
    # --allow-empty (the server's re-index): an empty folder is a normal run that changes nothing.
    allowed = run("index", str(lib), "--index", str(idx), "--allow-empty", "--json")
    assert allowed.exit_code == 0, allowed.stderr
    assert (json.loads(allowed.stdout)["indexed"], json.loads(allowed.stdout)["removed"]) == (0, 0)


def test_dry_run_on_an_existing_index_shows_moves(tmp_path: Path, tiny_ckpt: Path, lib: Path) -> None:
    idx = tmp_path / "idx"
    run("index", str(lib), "--index", str(idx), "--model", str(tiny_ckpt), "--workers", "1")
    (lib / "bikes.mp4").rename(lib / "renamed.mp4")
    report = json.loads(run("index", str(lib), "--index", str(idx), "--dry-run", "--json").stdout)
    assert (report["to_index"], report["moved"], report["unchanged"]) == (0, 1, 1)
    assert report["estimate"]["seconds"] is None
