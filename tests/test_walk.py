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


def test_hard_link_is_one_file_and_the_second_path_a_reported_duplicate(tmp_path: Path) -> None:
    first = _touch(tmp_path / "a.mp4")
    os.link(first, tmp_path / "b.mp4")
    items = list(walk([tmp_path]))
    assert [i.path for i in items if isinstance(i, FoundFile)] == [str(first)]
    (dup,) = [i for i in items if isinstance(i, WalkIssue)]
    assert dup.path == str(tmp_path / "b.mp4") and dup.status == "skipped" and str(first) in dup.reason


def test_symlinked_folder_is_walked_after_the_real_tree(tmp_path: Path) -> None:
    real = _touch(tmp_path / "z_real" / "clip.mp4")
    os.symlink(tmp_path / "z_real", tmp_path / "a_alias")  # sorts first, but the real path wins
    os.symlink(real, tmp_path / "link.mp4")
    items = list(walk([tmp_path]))
    assert [i.path for i in items if isinstance(i, FoundFile)] == [str(real)]
    # The symlinked file is a second path to the same file; the alias folder is not walked twice.
    assert [(Path(i.path).name, i.status) for i in items if isinstance(i, WalkIssue)] == [("link.mp4", "skipped")]


def test_same_root_twice_and_nested_roots_yield_each_file_once(tmp_path: Path) -> None:
    clip = _touch(tmp_path / "sub" / "x.mp4")
    items = list(walk([tmp_path / "sub", tmp_path, tmp_path, clip]))
    assert [i.path for i in items] == [str(clip)]


def test_socket_is_skipped_without_opening_it(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "s.mp4"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        items = list(walk([tmp_path]))
    assert items == [WalkIssue(str(path), "skipped", "not a regular file")]


def test_broken_link_is_skipped_with_a_reason(tmp_path: Path) -> None:
    os.symlink(tmp_path / "gone.mp4", tmp_path / "dangling.mp4")
    assert list(walk([tmp_path])) == [WalkIssue(str(tmp_path / "dangling.mp4"), "skipped", "broken symbolic link")]


def test_directory_issues_are_not_file_rows(tmp_path: Path) -> None:
    (item,) = walk([tmp_path / "absent"])
    assert isinstance(item, WalkIssue) and not item.is_file


def test_links_leaving_the_roots_are_skipped_with_the_reason(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    secret = _touch(outside / "secret.mp4")
    _touch(outside / "dir" / "deep.mp4")
    lib = tmp_path / "lib"
    _touch(lib / "own.mp4")
    os.symlink(secret, lib / "link.mp4")
    os.symlink(outside / "dir", lib / "linked_dir")
    os.symlink(lib / "own.mp4", lib / "alias.mp4")  # stays inside: followed (a duplicate of own.mp4)
    items = list(walk([lib]))
    found = [Path(f.path).name for f in items if isinstance(f, FoundFile)]
    assert found == ["own.mp4"]
    issues = {Path(i.path).name: i for i in items if isinstance(i, WalkIssue)}
    assert issues["alias.mp4"].reason.startswith("same file as")
    link, folder = issues["link.mp4"], issues["linked_dir"]
    assert link.status == "skipped" and link.is_file and str(secret) in link.reason and "--follow-links" in link.reason
    assert folder.status == "skipped" and not folder.is_file and "outside the indexed folders" in folder.reason


def test_follow_links_follows_them_and_lists_their_targets(tmp_path: Path) -> None:
    from indexer.walk import Walker

    outside = tmp_path / "outside"
    secret = _touch(outside / "secret.mp4")
    _touch(outside / "dir" / "deep.mp4")
    lib = tmp_path / "lib"
    _touch(lib / "own.mp4")
    os.symlink(secret, lib / "link.mp4")
    os.symlink(outside / "dir", lib / "linked_dir")
    walker = Walker([lib], follow_links=True)
    found = sorted(Path(f.path).relative_to(lib).as_posix() for f in walker if isinstance(f, FoundFile))
    assert found == ["link.mp4", "linked_dir/deep.mp4", "own.mp4"]
    assert sorted(walker.outside) == sorted([str(secret.resolve()), str((outside / "dir").resolve())])


def test_a_link_into_another_root_is_inside(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    target = _touch(b / "clip.mp4")
    os.symlink(target, _touch(a / "x.mp4").parent / "to_b.mp4")
    items = list(walk([a, b]))
    assert not [i for i in items if isinstance(i, WalkIssue) and "outside" in i.reason]
    assert sorted(Path(f.path).name for f in items if isinstance(f, FoundFile)) == ["clip.mp4", "x.mp4"]


def test_the_index_command_has_the_follow_links_flag() -> None:
    from click.testing import CliRunner

    from xclip_search.cli import cli

    out = CliRunner().invoke(cli, ["index", "--help"]).output
    assert "--follow-links" in out
