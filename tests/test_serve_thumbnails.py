"""Thumbnails: the JPEG maker, the per-shard storage (crash-consistent, garbage-collected like shards), the
on-demand fallback for indexes without stored thumbnails, and what the HTTP route serves."""

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
from xclip_search.thumbnails import (
    THUMBNAILS_DIR,
    backfill_thumbnails,
    decode_frame,
    make_thumbnail,
    read_stored,
    remove_unreferenced,
    representative_frame_index,
    thumbnail,
    thumbnail_paths,
    write_thumbnail_shard,
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
    from indexer.decoders import DECODERS

    for path in playable_videos.values():
        video = DECODERS["pyav"].open(str(path))
        try:
            for index in (0, 37, 99):
                expected = video.frames([index])[0]
                assert np.array_equal(decode_frame(str(path), index, video.info.fps), expected), (path.name, index)
        finally:
            video.close()


def test_fallback_then_stored_thumbnails_through_the_api(serve_index: Path, tmp_path: Path) -> None:
    copy = tmp_path / "index"
    shutil.copytree(serve_index, copy)
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


def test_thumbnail_function_decodes_when_nothing_is_stored(serve_index: Path) -> None:
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
