"""Video streaming and access rules: ranges (206/416/HEAD), the indexed-roots guard against traversal and
symlinks, static files, tokens for write operations, Host and Origin checks."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from xclip_search.serve.media import PathGuard, Unsatisfiable, parse_range, roots_from_runs

from .test_serve_api import make_client


@pytest.fixture(scope="module")
def client(serve_index: Path) -> Iterator[TestClient]:
    with make_client(serve_index) as c:
        yield c


def video_of(client: TestClient, suffix: str) -> tuple[int, Path]:
    for v in client.get("/api/videos", params={"status": "indexed"}).json()["videos"]:
        if v["path"].endswith(suffix):
            return v["video_id"], Path(v["path"])
    raise AssertionError(suffix)


@pytest.mark.parametrize(
    "header,size,expected",
    [
        (None, 100, None),
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=90-", 100, (90, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-1000", 100, (0, 99)),
        ("bytes=50-1000", 100, (50, 99)),
        ("bytes = 5 - 6", 100, (5, 6)),
        ("bytes=9-3", 100, None),  # invalid: ignored, whole file
        ("bytes=0-1,5-6", 100, None),  # multi-range: whole file
        ("items=0-5", 100, None),  # another unit: ignored
    ],
)
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    got = parse_range(header, size)
    assert (None if got is None else (got.start, got.end)) == expected


@pytest.mark.parametrize(
    "header",
    [
        "bytes=100-",
        "bytes=100-200",
        "bytes=-0",
        f"bytes={'9' * 30}-",
        # malformed bytes ranges are refused (416), never a 500: ASCII digits only
        "bytes=abc",
        "bytes=-",
        "bytes=0x10-20",
        "bytes=\u00b2-",
        "bytes=1-\u0663",
    ],
)
def test_parse_range_unsatisfiable(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, 100)


def test_stream_whole_file_ranges_and_head(client: TestClient) -> None:
    video_id, path = video_of(client, ".mp4")
    data = path.read_bytes()
    size = len(data)
    url = f"/api/videos/{video_id}/stream"
    whole = client.get(url)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "video/mp4" and whole.headers["accept-ranges"] == "bytes"
    part = client.get(url, headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == data[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{size}" and part.headers["content-length"] == "90"
    assert client.get(url, headers={"Range": "bytes=-16"}).content == data[-16:]
    tail = client.get(url, headers={"Range": f"bytes={size - 5}-{size + 500}"})
    assert tail.status_code == 206 and tail.content == data[-5:]
    assert tail.headers["content-range"] == f"bytes {size - 5}-{size - 1}/{size}"
    for past in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        r = client.get(url, headers={"Range": past})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}", past
    head = client.head(url, headers={"Range": "bytes=0-1"})
    assert head.status_code == 206 and head.content == b"" and head.headers["content-length"] == "2"
    head = client.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(size)
    etag = whole.headers["etag"]
    assert client.get(url, headers={"Range": "bytes=0-1", "If-Range": etag}).status_code == 206
    assert client.get(url, headers={"Range": "bytes=0-1", "If-Range": '"stale"'}).status_code == 200
    webm_id, _ = video_of(client, ".webm")
    assert client.head(f"/api/videos/{webm_id}/stream").headers["content-type"] == "video/webm"


def test_failed_video_and_unknown_ids(client: TestClient) -> None:
    broken = next(v for v in client.get("/api/videos").json()["videos"] if v["status"] == "failed")
    # A file that failed to index is still inside the roots: it may be served (the browser will say it cannot play).
    assert client.head(f"/api/videos/{broken['video_id']}/stream").status_code == 200
    assert client.get("/api/videos/999999/stream").status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "/api/videos/..%2F..%2F..%2Fetc%2Fpasswd/stream",
        "/api/videos/%2Fetc%2Fpasswd/stream",
        "/api/videos//etc/passwd/stream",
        "/api/videos/1%2F..%2F2/stream",
        "/api/videos/1/stream/../../../../etc/passwd",
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2fapp.py",
        "/static/%2Fetc%2Fpasswd",
        "/api/segments/..%2f1/thumbnail",
    ],
)
def test_traversal_attempts_never_reach_a_file(client: TestClient, url: str) -> None:
    r = client.get(url)
    assert r.status_code in (404, 422), (url, r.status_code)
    assert b"root:" not in r.content and b"import" not in r.content


def make_outside_index(tmp_path: Path, tiny_ckpt: Path, playable_videos: dict[str, Path], follow: bool) -> Path:
    """An index whose library holds a symlink to a video outside the indexed root, and a file root."""
    from indexer import IndexOptions, run_index

    lib = tmp_path / "lib"
    lib.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    mp4, webm, _ = playable_videos.values()
    shutil.copy(mp4, outside / "secret.mp4")
    (lib / "link.mp4").symlink_to(outside / "secret.mp4")
    shutil.copy(webm, lib / "inside.webm")
    single = tmp_path / "single.mp4"
    shutil.copy(mp4, single)
    idx = tmp_path / "index"
    opts = IndexOptions(segment_seconds=0, workers=0, follow_links=follow)
    run_index([str(lib), str(single)], idx, model=str(tiny_ckpt), options=opts)
    return idx


@pytest.fixture()
def outside_index(tmp_path: Path, tiny_ckpt: Path, playable_videos: dict[str, Path]) -> Path:
    return make_outside_index(tmp_path, tiny_ckpt, playable_videos, follow=False)


def test_symlinks_out_of_the_roots_are_skipped_and_refused(outside_index: Path) -> None:
    """One rule for indexing and serving: a link leading outside the roots is neither indexed nor served."""
    with make_client(outside_index) as c:
        listed = {Path(v["path"]).name: v for v in c.get("/api/videos").json()["videos"]}
        assert set(listed) == {"link.mp4", "inside.webm", "single.mp4"}
        videos = {name: v["video_id"] for name, v in listed.items()}
        link = listed["link.mp4"]
        assert link["status"] == "skipped" and "--follow-links" in link["reason"]
        assert c.get(f"/api/videos/{videos['link.mp4']}").json()["segments"] == []
        refused = c.get(f"/api/videos/{videos['link.mp4']}/stream")
        assert refused.status_code == 403 and "inside the indexed folders" in refused.json()["error"]
        assert c.get(f"/api/videos/{videos['inside.webm']}/stream").status_code == 200
        assert c.get(f"/api/videos/{videos['single.mp4']}/stream").status_code == 200  # a file given as root
        # A file swapped for a symlink leading outside after indexing is refused; a deleted one is 404.
        inside = outside_index.parent / "lib" / "inside.webm"
        inside.unlink()
        inside.symlink_to("/etc/passwd")
        assert c.get(f"/api/videos/{videos['inside.webm']}/stream").status_code == 403
        inside.unlink()
        assert c.get(f"/api/videos/{videos['inside.webm']}/stream").status_code == 404


def test_with_follow_links_linked_videos_are_indexed_and_playable(
    tmp_path: Path, tiny_ckpt: Path, playable_videos: dict[str, Path]
) -> None:
    index_dir = make_outside_index(tmp_path, tiny_ckpt, playable_videos, follow=True)
    with make_client(index_dir) as c:
        videos = {Path(v["path"]).name: v for v in c.get("/api/videos").json()["videos"]}
        link = videos["link.mp4"]
        assert link["status"] == "indexed"
        assert str((tmp_path / "outside" / "secret.mp4").resolve()) in c.get("/api/index").json()["roots"]
        streamed = c.get(f"/api/videos/{link['video_id']}/stream", headers={"Range": "bytes=0-9"})
        assert streamed.status_code == 206
        assert streamed.content == (tmp_path / "outside" / "secret.mp4").read_bytes()[:10]
        seg = c.get(f"/api/videos/{link['video_id']}").json()["segments"][0]["segment_id"]
        assert c.get(f"/api/segments/{seg}/thumbnail").status_code == 200
    shutil.rmtree(index_dir / "thumbnails")  # the on-demand fallback opens the link's target through the guard
    with make_client(index_dir) as fresh:
        assert fresh.get(f"/api/segments/{seg}/thumbnail").status_code == 200


def test_path_guard_rules(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    ok = root / "sub" / "a.mp4"
    ok.write_bytes(b"x")
    (root / "notes.txt").write_text("x")
    sibling = tmp_path / "root-evil"
    sibling.mkdir()
    (sibling / "b.mp4").write_bytes(b"x")
    (root / "dir.mp4").mkdir()
    guard = PathGuard([root.resolve()])
    assert guard.check(str(ok)) == str(ok.resolve())
    assert guard.check(str(root / "sub" / ".." / "sub" / "a.mp4")) == str(ok.resolve())
    assert guard.check(str(root / "notes.txt")) is None  # extension not allowlisted
    assert guard.check(str(sibling / "b.mp4")) is None  # a prefix is not a parent
    assert guard.check(str(root / ".." / "root-evil" / "b.mp4")) is None
    assert guard.check("sub/a.mp4") is None  # relative
    assert guard.check(str(root / "dir.mp4")) is None  # not a regular file
    assert guard.check(str(root / "missing.mp4")) is None
    fifo = root / "pipe.mp4"
    os.mkfifo(fifo)
    assert guard.check(str(fifo)) is None
    runs = [(json.dumps([str(root)]), [str(ok)]), (None, []), ("not json", []), (json.dumps({"a": 1}), [])]
    assert roots_from_runs(runs) == [root.resolve()]


def test_relative_roots_become_the_folder_of_their_videos(tmp_path: Path) -> None:
    """`xclip-search index clips/` records "clips": the root is derived from what that run indexed, never wider."""
    a, b, elsewhere = tmp_path / "clips" / "a" / "1.mp4", tmp_path / "clips" / "b" / "2.mp4", tmp_path / "x" / "3.mp4"
    runs = [(json.dumps(["clips"]), [str(a), str(b)]), (json.dumps([str(tmp_path / "x"), "more"]), [str(elsewhere)])]
    assert roots_from_runs(runs) == [(tmp_path / "clips").resolve(), (tmp_path / "x").resolve()]
    assert roots_from_runs([(json.dumps(["clips"]), [])]) == []  # nothing indexed: nothing to serve


def test_write_operations_need_the_token(serve_index: Path) -> None:
    with make_client(serve_index, token="s3cret") as c:
        body = {"labels": "a", "video_id": 424242, "save": True}
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Basic s3cret"},
            {"Authorization": "s3cret"},
        ):
            r = c.post("/api/tag", json=body, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", headers
            assert c.post("/api/index/update", headers=headers).status_code == 401
        ok = c.post("/api/tag", json=body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 404  # authorised (then: no such video; nothing is written to the shared index)
        video_id, _ = video_of(c, ".webm")
        assert c.post("/api/tag", json={"labels": "a", "video_id": video_id}).status_code == 200  # no token needed
        assert c.get("/api/index").json()["writes"] == "token"


def test_no_writes_beyond_localhost_without_a_token(serve_index: Path) -> None:
    with make_client(serve_index, host="0.0.0.0") as c:
        r = c.post("/api/index/update")
        assert r.status_code == 403 and "--token" in r.json()["error"]
        assert c.get("/api/index").json()["writes"] == "disabled"
        assert c.get("/api/health", headers={"Host": "example.org"}).status_code == 200


def test_host_and_origin_checks_on_loopback(client: TestClient) -> None:
    assert client.get("/api/health", headers={"Host": "evil.example"}).status_code == 421
    for host in ("localhost:8765", "127.0.0.1", "[::1]:80"):
        assert client.get("/api/health", headers={"Host": host}).status_code == 200, host
    r = client.post("/api/index/update", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "Cross-origin" in r.json()["error"]


def test_reindex_job_runs_the_indexer_over_the_recorded_roots(serve_index: Path, tmp_path: Path) -> None:
    copy = tmp_path / "index"
    shutil.copytree(serve_index, copy)
    with make_client(copy) as c:
        started = c.post("/api/index/update")
        assert started.status_code == 202, started.text
        assert started.json()["roots"] == [str((serve_index.parent / "library").resolve())]
        assert c.post("/api/index/update").status_code in (409, 202)  # one job at a time (409 while running)
        state = c.app.state.jobs.wait(120)  # type: ignore[attr-defined]
        assert state["state"] == "finished", state
        # broken.mp4 is still failed from the first run: reported, and exit code 3, as for a nightly cron run.
        assert state["report"]["unchanged"] == 4 and state["report"]["still_failed"] == 1
        assert state["exit_code"] == 3 and c.get("/api/index/update").json() == state


def test_reindex_of_recorded_folders_that_are_now_empty_finishes(
    tmp_path: Path, tiny_ckpt: Path, playable_videos: dict[str, Path]
) -> None:
    """A recorded folder emptied since (its videos deleted or moved away) is a normal outcome for the server's
    re-index, as for the watcher: the job finishes with an empty report instead of failing on the command
    line's "No video files" guard. It does not prune (the button indexes new and changed files only)."""
    from indexer import IndexOptions, run_index

    lib = tmp_path / "clips"
    lib.mkdir()
    webm = next(p for p in playable_videos.values() if p.suffix == ".webm")
    shutil.copy(webm, lib / webm.name)
    run_index([lib], tmp_path / "index", model=str(tiny_ckpt), options=IndexOptions(segment_seconds=0, workers=0))
    (lib / webm.name).unlink()
    with make_client(tmp_path / "index") as c:
        started = c.post("/api/index/update")
        assert started.status_code == 202, started.text
        state = c.app.state.jobs.wait(120)  # type: ignore[attr-defined]
        assert state["state"] == "finished", state
        assert state["exit_code"] == 0 and (state["report"]["indexed"], state["report"]["failed"]) == (0, 0)
        assert c.get("/api/index/update").json() == state
        assert c.get("/api/index").json()["videos"]["indexed"] == 1  # not pruned: that is index --prune's job


def test_videos_indexed_from_a_relative_path_stream(
    tmp_path: Path, tiny_ckpt: Path, playable_videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from indexer import IndexOptions, run_index

    (tmp_path / "clips").mkdir()
    webm = next(p for p in playable_videos.values() if p.suffix == ".webm")
    shutil.copy(webm, tmp_path / "clips" / webm.name)
    monkeypatch.chdir(tmp_path)
    run_index(["clips"], "index", model=str(tiny_ckpt), options=IndexOptions(segment_seconds=0, workers=0))
    monkeypatch.chdir("/")
    with make_client(tmp_path / "index") as c:
        assert c.get("/api/index").json()["roots"] == [str((tmp_path / "clips").resolve())]
        video_id, _ = video_of(c, ".webm")
        assert c.get(f"/api/videos/{video_id}/stream", headers={"Range": "bytes=0-3"}).content == webm.read_bytes()[:4]
