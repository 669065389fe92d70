from __future__ import annotations

import os
from pathlib import Path

from indexer.walk import FoundFile, WalkIssue, walk


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_allowlist_is_case_insensitive_and_recursive(tmp_path: Path) -> None:
    for name in ["a.mp4", "b.MKV", "c.WebM", "d/e.mov", "d/f/g.GIF", "h.txt", "i.jpg", "noext"]:
        _touch(tmp_path / name)
    found = sorted(Path(f.path).name for f in walk([tmp_path]) if isinstance(f, FoundFile))
    assert found == ["a.mp4", "b.MKV", "c.WebM", "e.mov", "g.GIF"]


def test_symlink_loops_terminate_and_files_are_seen_once(tmp_path: Path) -> None:
    _touch(tmp_path / "lib" / "x.mp4")
    os.symlink(tmp_path / "lib", tmp_path / "lib" / "loop")
    os.symlink(tmp_path / "lib", tmp_path / "alias")
    found = [f for f in walk([tmp_path]) if isinstance(f, FoundFile)]
    # The same directory is visited once, through whichever path the walk meets first.
    assert len(found) == 1


def test_fifo_is_skipped_without_opening_it(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.mp4")
    items = list(walk([tmp_path]))
    assert items == [WalkIssue(str(tmp_path / "pipe.mp4"), "skipped", "not a regular file")]


def test_explicit_non_video_file_is_reported(tmp_path: Path) -> None:
    note = _touch(tmp_path / "notes.txt")
    (item,) = walk([note])
    assert isinstance(item, WalkIssue) and item.status == "skipped" and "extension" in item.reason


def test_missing_root_and_broken_link_are_reported(tmp_path: Path) -> None:
    os.symlink(tmp_path / "nowhere.mp4", tmp_path / "dangling.mp4")
    items = list(walk([tmp_path / "absent", tmp_path]))
    assert {(type(i).__name__, Path(i.path).name) for i in items} == {
        ("WalkIssue", "absent"),
        ("WalkIssue", "dangling.mp4"),
    }


def test_unreadable_directory_is_an_issue_not_a_crash(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    _touch(locked / "x.mp4")
    locked.chmod(0)
    try:
        items = list(walk([tmp_path]))
    finally:
        locked.chmod(0o755)
    if os.geteuid() == 0:  # root reads anything; the walk must still finish
        assert any(isinstance(i, FoundFile) for i in items)
    else:
        assert any(isinstance(i, WalkIssue) and "cannot list" in i.reason for i in items)
