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

    again = run("index", str(lib), "--index", str(idx), "--json")
    assert again.exit_code == 0  # nothing failed in this run
    assert json.loads(again.stdout)["unchanged"] == 2
    human = run("index", str(lib), "--index", str(idx))
    assert "1 unchanged file(s) failed in an earlier run" in human.stderr


def test_dry_run_on_an_existing_index_shows_moves(tmp_path: Path, tiny_ckpt: Path, lib: Path) -> None:
    idx = tmp_path / "idx"
    run("index", str(lib), "--index", str(idx), "--model", str(tiny_ckpt), "--workers", "1")
    (lib / "bikes.mp4").rename(lib / "renamed.mp4")
    report = json.loads(run("index", str(lib), "--index", str(idx), "--dry-run", "--json").stdout)
    assert (report["to_index"], report["moved"], report["unchanged"]) == (0, 1, 1)
    assert report["estimate"]["seconds"] is None
