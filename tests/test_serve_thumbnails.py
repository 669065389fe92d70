"""Thumbnails: the JPEG maker, the per-shard storage (crash-consistent, garbage-collected like shards), the
on-demand fallback for indexes without stored thumbnails (decoded in isolated worker processes), and what the
HTTP route serves."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xclip_search.sampling import sample_frame_indices
from xclip_search.store.manifest import read_manifest
from xclip_search.store.thumbshards import (
    THUMBNAILS_DIR,
    read_stored,
    remove_unreferenced,
    thumbnail_paths,
    write_thumbnail_shard,
)
from xclip_search.thumbnails import (
    backfill_thumbnails,
    decode_frame,
    make_thumbnail,
    representative_frame_index,
    thumbnail,
)

from .test_serve_api import make_client


def jpeg_size(data: bytes) -> tuple[int, int]:
    assert data[:3] == b"\xff\xd8\xff"
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "JPEG"
        return img.size


@pytest.mark.parametrize("shape,expected", [((720, 1280, 3), (256, 144)), ((96, 48, 3), (48, 96)), ((1, 1, 3), (1, 1))])
def test_make_thumbnail_bounds_the_longest_side(shape: tuple[int, int, int], expected: tuple[int, int]) -> None:
    frame = np.random.default_rng(0).integers(0, 255, size=shape, dtype=np.uint8)
    data = make_thumbnail(frame)
    assert jpeg_size(data) == expected
    if shape[0] > 256:
        assert len(data) < 60_000  # "small": a 256-px JPEG, not the frame


def test_make_thumbnail_keeps_the_picture() -> None:
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:, :32] = (255, 0, 0)
    with Image.open(io.BytesIO(make_thumbnail(frame))) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=int)
    assert pixels[32, 8, 0] > 200 and pixels[32, 8, 1] < 60 and pixels[32, 56].max() < 60


@pytest.mark.parametrize("shape", [(10, 10), (10, 10, 4), (0, 10, 3)])
def test_make_thumbnail_refuses_non_rgb(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="RGB frame"):
        make_thumbnail(np.zeros(shape, np.uint8))


def test_representative_frame_is_the_middle_sampled_frame() -> None:
    assert representative_frame_index(0, 80, 8) == sample_frame_indices(0, 80, 8)[4] == 45
    assert representative_frame_index(25, 50, 8) == sample_frame_indices(25, 50, 8)[4]
    assert representative_frame_index(3, 4, 8) == 3


def test_shard_storage_round_trip_and_validation(tmp_path: Path) -> None:
    a, b = b"\xff\xd8\xffAAAA", b"\xff\xd8\xffBB"
    write_thumbnail_shard(tmp_path, "00000001-abcd", [a, None, b])
    assert [read_stored(tmp_path, "00000001-abcd", i) for i in range(3)] == [a, None, b]
    assert read_stored(tmp_path, "00000001-abcd", 3) is None and read_stored(tmp_path, "00000001-abcd", -1) is None
    assert read_stored(tmp_path, "missing", 0) is None
    jpgs, offsets = thumbnail_paths(tmp_path, "00000001-abcd")
    assert not [p for p in jpgs.parent.iterdir() if p.name.startswith(".")]  # no temporaries left
    # A pack whose offsets do not describe its bytes (truncated, or offsets without bytes) reads as absent.
    jpgs.write_bytes(jpgs.read_bytes()[:-1])
    assert read_stored(tmp_path, "00000001-abcd", 0) is None
    jpgs.unlink()
    assert read_stored(tmp_path, "00000001-abcd", 0) is None
    np.save(offsets, np.array([0, 5, 3]), allow_pickle=False)
    jpgs.write_bytes(b"x" * 3)
    assert read_stored(tmp_path, "00000001-abcd", 0) is None  # not monotonic
    offsets.write_bytes(b"garbage")
    assert read_stored(tmp_path, "00000001-abcd", 0) is None


def test_garbage_collection_follows_the_shard_names(tmp_path: Path) -> None:
    write_thumbnail_shard(tmp_path, "00000001-keep", [b"k"])
    write_thumbnail_shard(tmp_path, "00000002-orphan", [b"o"])
    stale = tmp_path / THUMBNAILS_DIR / ".00000003-x.jpgs.tmp-123-abcd"
    stale.write_bytes(b"half")
    assert remove_unreferenced(tmp_path, {"00000001-keep"}) == 3
    assert sorted(p.name for p in (tmp_path / THUMBNAILS_DIR).iterdir()) == [
        "00000001-keep.jpgs",
        "00000001-keep.offsets.npy",
    ]
    assert remove_unreferenced(tmp_path / "nothing-here", set()) == 0


def test_decode_frame_matches_sequential_decoding(playable_videos: dict[str, Path]) -> None:
    from indexer.decoders import DECODERS, read_frames

    for path in playable_videos.values():
        video = DECODERS["pyav"].open(str(path))
        try:
            for index in (0, 37, 99):
                expected = read_frames(video, [index])[0]
                assert np.array_equal(decode_frame(str(path), index, video.info.fps), expected), (path.name, index)
        finally:
            video.close()


def test_the_indexer_stores_thumbnails_that_match_the_decoded_frame(serve_index: Path, tmp_path: Path) -> None:
    manifest = read_manifest(serve_index)
    assert manifest.shards and all(thumbnail_paths(serve_index, s.name)[1].exists() for s in manifest.shards)
    bare = tmp_path / "bare"
    shutil.copytree(serve_index, bare)
    shutil.rmtree(bare / THUMBNAILS_DIR)
    with make_client(serve_index) as c:
        videos = c.get("/api/videos", params={"status": "indexed"}).json()["videos"]
        checked = 0
        for video in videos:
            for seg in c.get(f"/api/videos/{video['video_id']}").json()["segments"]:
                stored = c.get(seg["thumbnail_url"]).content
                decoded = thumbnail(bare, seg["segment_id"])  # PyAV, on demand: what the server falls back to
                assert decoded is not None
                a = np.asarray(Image.open(io.BytesIO(stored)), dtype=np.int16)
                b = np.asarray(Image.open(io.BytesIO(decoded)), dtype=np.int16)
                assert a.shape == b.shape, video["name"]
                assert np.abs(a - b).mean() < 4.0, (video["name"], seg["segment_id"])  # decord vs PyAV, JPEG
                checked += 1
        text = c.get("/metrics").text
        assert re.search(rf'xclip_search_thumbnails_total\{{source="stored"\}} {checked}\.0', text), text
        assert 'source="decoded"' not in text


def test_fallback_then_stored_thumbnails_through_the_api(serve_index: Path, tmp_path: Path) -> None:
    copy = tmp_path / "index"
    shutil.copytree(serve_index, copy)
    shutil.rmtree(copy / THUMBNAILS_DIR)  # an index made before the indexer stored thumbnails
    with make_client(copy) as c:
        video = next(v for v in c.get("/api/videos", params={"status": "indexed"}).json()["videos"])
        segs = c.get(f"/api/videos/{video['video_id']}").json()["segments"]
        url = segs[1]["thumbnail_url"]
        first = c.get(url)
        assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
        assert jpeg_size(first.content) == (128, 96 if "red" in video["name"] or "blue" in video["name"] else 72)
        assert c.get(url).content == first.content
        assert c.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
        text = c.get("/metrics").text
        assert re.search(r'xclip_search_thumbnails_total\{source="decoded"\} 1\.0', text)
        assert re.search(r'xclip_search_thumbnails_total\{source="cached"\} 1\.0', text)
        assert c.get("/api/segments/424242/thumbnail").status_code == 404

        # Stored thumbnails (what the indexer will write) take precedence and equal the on-demand ones.
        assert backfill_thumbnails(copy) == len(read_manifest(copy).shards) >= 1
        assert backfill_thumbnails(copy) == 0  # already there
        stored = c.get(url)
        assert stored.content == first.content
        assert re.search(r'xclip_search_thumbnails_total\{source="stored"\} 1\.0', c.get("/metrics").text)
    assert thumbnail(copy, segs[1]["segment_id"]) == first.content
    assert thumbnail(copy, 424242) is None


def test_thumbnail_function_decodes_when_nothing_is_stored(serve_index: Path, tmp_path: Path) -> None:
    shutil.copytree(serve_index, tmp_path / "index")
    serve_index = tmp_path / "index"
    shutil.rmtree(serve_index / THUMBNAILS_DIR)
    manifest = read_manifest(serve_index)
    assert not thumbnail_paths(serve_index, manifest.shards[0].name)[1].exists()
    from xclip_search.store.catalog import Catalog

    catalog = Catalog.open(serve_index)
    try:
        some_id = int(catalog.live_segment_ids(manifest.generation)[0])
    finally:
        catalog.close()
    assert thumbnail(serve_index, some_id, decode_missing=False) is None
    data = thumbnail(serve_index, some_id)
    assert data is not None and jpeg_size(data)[0] == 128


def test_on_demand_thumbnails_are_decoded_in_worker_processes(serve_index: Path, tmp_path: Path) -> None:
    """The server never decodes a video itself: a worker that dies costs one thumbnail, and the next request
    gets a fresh worker; the server process stays up and answers."""
    import os
    import signal
    import time

    copy = tmp_path / "index"
    shutil.copytree(serve_index, copy)
    shutil.rmtree(copy / THUMBNAILS_DIR)
    with make_client(copy) as c:
        source = c.app.state.thumbnails  # type: ignore[attr-defined]
        video = c.get("/api/videos", params={"status": "indexed"}).json()["videos"][0]
        segs = c.get(f"/api/videos/{video['video_id']}").json()["segments"]
        assert c.get(segs[0]["thumbnail_url"]).status_code == 200
        pids = source.decoder.pids()
        assert pids and os.getpid() not in pids
        for pid in pids:  # a decoder crash, as a hostile file would cause
            os.kill(pid, signal.SIGKILL)
        for pid in pids:  # wait until the kernel has ended them (they stay zombies until reaped)
            stat = Path(f"/proc/{pid}/stat")
            while stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
                time.sleep(0.01)
        assert c.get(segs[1]["thumbnail_url"]).status_code == 200  # a fresh worker decodes it
        assert c.get(segs[2]["thumbnail_url"]).status_code == 200
        assert c.get("/api/health").status_code == 200
        assert not set(source.decoder.pids()) & set(pids)
    assert source._decoder is None  # closed with the server: its workers are gone


def test_a_frame_decode_that_hangs_is_killed_at_its_timeout(tmp_path: Path, playable_videos: dict[str, Path]) -> None:
    import os

    from indexer.framejobs import FrameJobs

    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)  # opening it for reading blocks forever: a decoder that never returns
    jobs = FrameJobs(workers=1, timeout_s=3.0)
    try:
        assert jobs.thumbnail(str(fifo), 0, 25.0) is None
        assert jobs.pids() == []  # the hung worker was killed
        good = next(iter(playable_videos.values()))
        data = jobs.thumbnail(str(good), 10, 25.0)
        assert data is not None and jpeg_size(data)[0] == 128
        assert jobs.thumbnail(str(tmp_path / "missing.mp4"), 0, None) is None
        assert len(jobs.pids()) == 1  # an unreadable file costs no worker
    finally:
        jobs.close()
