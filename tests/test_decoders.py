"""Both decoders return the same frames and counts, decode only what sampled frames need, and probe cheaply."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indexer.decoders import DECODERS, FORWARD_ONLY, _PyAVVideo, clean_message, read_frames
from indexer.probe import Limits, probe
from xclip_search.errors import VideoError, VideoLimitError

from .conftest import REAL_CLIP, REAL_CLIP_HD

# (name, codec, frames, height, width, encoder options): ordinary GOPs with B-frames, several containers.
CLIPS = [
    ("gop12_bframes.mp4", "libx264", 100, 48, 64, {"g": "12", "bf": "2"}),
    ("gop25.mkv", "libx264", 80, 48, 64, {"g": "25"}),
    ("mpeg4_gop10.avi", "mpeg4", 60, 48, 64, {"g": "10"}),
    ("program_stream.mpg", "mpeg2video", 50, 48, 64, {"g": "12"}),
    ("transport_stream.ts", "libx264", 60, 48, 64, {"g": "15"}),
]

_WRITER = """
import json, sys
from pathlib import Path
from xclip_search.testing import synthetic_frames, write_video
root = Path(sys.argv[1])
for i, (name, codec, n, h, w, opts) in enumerate(json.loads(sys.argv[2])):
    write_video(root / name, synthetic_frames(n, h, w, seed=10 + i), codec=codec, options=opts)
"""


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gop-clips")
    subprocess.run([sys.executable, "-c", _WRITER, str(root), json.dumps(CLIPS)], check=True)
    return {name: root / name for name, *_ in CLIPS}


def every_frame(path: Path) -> list[np.ndarray]:
    """The reference: every frame, decoded in order from the start."""
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def sparse_indices(n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return sorted({int(i) for i in rng.choice(n, size=min(n, 9), replace=False)})


@pytest.mark.parametrize("name", ["gop12_bframes.mp4", "gop25.mkv", "mpeg4_gop10.avi"])
def test_pyav_and_decord_agree_on_count_and_frames(clips: dict[str, Path], name: str) -> None:
    path = str(clips[name])
    reference = every_frame(clips[name])
    a, b = DECODERS["decord"].open(path), DECODERS["pyav"].open(path)
    try:
        assert a.info.num_frames == b.info.num_frames == len(reference)
        for seed in range(3):
            idx = sparse_indices(len(reference), seed)
            got_a, got_b = read_frames(a, idx), read_frames(b, idx)
            assert np.array_equal(got_a, got_b)
            assert all(np.array_equal(got_b[k], reference[i]) for k, i in enumerate(idx))
        assert b.warnings == 0
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("clip", [REAL_CLIP, REAL_CLIP_HD])
def test_real_clips_decode_identically(clip: Path) -> None:
    a, b = DECODERS["decord"].open(str(clip)), DECODERS["pyav"].open(str(clip))
    n = a.info.num_frames
    assert b.info.num_frames == n and b.info.fps == pytest.approx(a.info.fps)
    idx = sorted({0, 1, n // 3, n // 2, n - 2, n - 1})
    assert np.array_equal(read_frames(a, idx), read_frames(b, idx))


def test_pyav_seeks_once_per_keyframe_group_instead_of_decoding_everything(
    clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded = {"frames": 0, "seeks": 0}
    original_decode, original_seek = _PyAVVideo._decode, _PyAVVideo._seek

    def counting_decode(self: _PyAVVideo):  # type: ignore[no-untyped-def]
        for frame in original_decode(self):
            decoded["frames"] += 1
            yield frame

    def counting_seek(self: _PyAVVideo, key: int) -> None:
        decoded["seeks"] += 1
        original_seek(self, key)

    monkeypatch.setattr(_PyAVVideo, "_decode", counting_decode)
    monkeypatch.setattr(_PyAVVideo, "_seek", counting_seek)
    video = DECODERS["pyav"].open(str(clips["gop12_bframes.mp4"]))  # 100 frames, a keyframe every 12
    frames = read_frames(video, [3, 5, 50, 97])
    assert len(frames) == 4
    # Three keyframe groups (0, 48, 96): three seeks, and about one group decoded per seek, not 98 frames.
    assert decoded["seeks"] == 3
    assert decoded["frames"] <= 3 * 12 + 6


def test_mpeg_program_and_transport_streams_decode_forward_with_the_right_frames(clips: dict[str, Path]) -> None:
    for name in ("program_stream.mpg", "transport_stream.ts"):
        path = clips[name]
        assert not probe(str(path), Limits()).seekable
        reference = every_frame(path)
        video = FORWARD_ONLY.open(str(path))
        idx = sparse_indices(len(reference), 1)
        got = read_frames(video, idx)
        assert video.info.num_frames == len(reference)
        assert all(np.array_equal(got[k], reference[i]) for k, i in enumerate(idx)), name


def test_seeking_pyav_recovers_where_seeks_land_imprecisely(clips: dict[str, Path]) -> None:
    path = clips["transport_stream.ts"]
    reference = every_frame(path)
    video = DECODERS["pyav"].open(str(path))  # not told: it must notice and go forward-only itself
    idx = [5, 40, 58]
    got = read_frames(video, idx)
    assert all(np.array_equal(got[k], reference[i]) for k, i in enumerate(idx))


def test_corrupt_packets_are_skipped_and_counted(tmp_path: Path) -> None:
    data = bytearray(REAL_CLIP.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 20000, 7):
        data[i] ^= 0x55
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))
    video = DECODERS["pyav"].open(str(broken))
    n = video.info.num_frames
    frames = read_frames(video, list(range(0, n, n // 8)))
    assert frames.shape[0] == len(range(0, n, n // 8))
    assert video.warnings > 0


def test_probe_reads_the_header_and_refuses_over_the_limits() -> None:
    p = probe(str(REAL_CLIP), Limits())
    assert (p.width, p.height, p.codec, p.seekable) == (640, 272, "h264", True)
    assert p.duration_s == pytest.approx(10.0) and p.frames == 250
    with pytest.raises(VideoLimitError, match="pixels"):
        probe(str(REAL_CLIP), Limits(max_pixels=640 * 271))
    with pytest.raises(VideoLimitError, match="duration"):
        probe(str(REAL_CLIP), Limits(max_duration_s=9.0))


def test_probe_refuses_a_huge_frame_without_decoding_it(tmp_path: Path) -> None:
    """An 8192x8192 H.264 file of ~200 KB: refused from its header, and probing it costs a few MB."""
    code = """
import resource, sys, numpy as np, av
path = sys.argv[1]
with av.open(path, "w") as c:
    s = c.add_stream("libx264", rate=25); s.width = s.height = 8192; s.pix_fmt = "yuv420p"
    s.options = {"preset": "ultrafast", "crf": "51"}
    for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((8192, 8192, 3), np.uint8), format="rgb24")):
        c.mux(p)
    for p in s.encode():
        c.mux(p)
"""
    huge = tmp_path / "huge.mp4"
    subprocess.run([sys.executable, "-c", code, str(huge)], check=True)
    assert huge.stat().st_size < 1_000_000
    check = """
import resource, sys
from indexer.probe import Limits, probe
from xclip_search.errors import VideoLimitError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    probe(sys.argv[1], Limits())
except VideoLimitError as exc:
    print(str(exc))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    out = subprocess.run([sys.executable, "-c", check, str(huge)], check=True, capture_output=True, text=True)
    reason, grown_mb = out.stdout.strip().splitlines()
    assert "8192x8192 exceeds" in reason
    assert int(grown_mb) < 48  # decoding one frame of it would take ~160 MB


def test_not_a_video_is_a_clean_error(tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    with pytest.raises(VideoError, match="not a readable video"):
        probe(str(fake), Limits())
    for name in ("decord", "pyav"):
        with pytest.raises(VideoError):
            DECODERS[name].open(str(fake))


def test_decoder_messages_are_cleaned() -> None:
    pyav = "[Errno 1094995529] Invalid data found when processing input: '/x/y.mp4'; last error log: [mov] moov atom"
    assert clean_message(Exception(pyav)) == "Invalid data found when processing input; last error log: [mov] moov atom"
    decord = "[20:58:25] /src/video_reader.cc:292: [20:58:25] /src/decoder.cc:218: Check failed: send_packet >= 0"
    assert clean_message(Exception(decord)) == "send_packet >= 0"


def test_crop_normalizer_is_bit_identical_to_normalize() -> None:
    from indexer.extract import CropNormalizer
    from xclip_search.pixels import PixelConfig, normalize

    crops = np.random.default_rng(0).integers(0, 256, size=(2, 8, 24, 24, 3), dtype=np.uint8)
    for cfg in (
        {
            "size": 24,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
        },
        {"size": 24, "do_rescale": False},
        {"size": 24, "do_normalize": False},
    ):
        pixels = PixelConfig.from_preprocessor_dict(cfg, image_size=24)
        expected = normalize(crops, pixels)
        got = CropNormalizer(pixels)(crops)
        assert got.dtype == expected.dtype and got.shape == expected.shape == (2, 8, 3, 24, 24)
        assert np.array_equal(got, expected)


CONTAINERS = [
    ("clip.wmv", "wmv2", "yuv420p", 30, "decord"),
    ("clip.3gp", "mpeg4", "yuv420p", 30, "decord"),
    ("clip.m4v", "libx264", "yuv420p", 30, "decord"),
    ("clip.flv", "flv", "yuv420p", 30, "decord"),
    ("clip.mpeg", "mpeg2video", "yuv420p", 30, "pyav"),  # forward-only: MPEG program stream
    ("clip.gif", "gif", "rgb8", 20, "pyav"),  # decord cannot open GIFs: the PyAV retry takes it
]

_CONTAINER_WRITER = """
import json, sys
from pathlib import Path
from xclip_search.testing import synthetic_frames, write_video
root = Path(sys.argv[1])
for name, codec, fmt, n, _ in json.loads(sys.argv[2]):
    write_video(root / name, synthetic_frames(n, 48, 64, seed=n), codec=codec, pix_fmt=fmt)
"""


@pytest.fixture(scope="module")
def containers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("containers")
    subprocess.run([sys.executable, "-c", _CONTAINER_WRITER, str(root), json.dumps(CONTAINERS)], check=True)
    return root


@pytest.mark.parametrize("name,frames,decoder", [(c[0], c[3], c[4]) for c in CONTAINERS])
def test_every_allowlisted_container_is_extracted(containers: Path, name: str, frames: int, decoder: str) -> None:
    from indexer.extract import ExtractSpec, extract
    from xclip_search.pixels import PixelConfig

    spec = ExtractSpec(num_frames=8, pixels=PixelConfig.from_preprocessor_dict({"size": 32}, image_size=32))
    ext = extract(str(containers / name), spec)
    assert ext.decoder == decoder and ext.info.num_frames == frames
    assert ext.pixels.shape == (1, 8, 3, 32, 32)
