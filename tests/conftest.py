"""Shared fixtures: tiny random X-CLIP checkpoints, generated videos in several codecs, and a real clip.

Nothing here touches the network: HF_HUB_OFFLINE is set for the whole session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from xclip_search.testing import make_tiny_checkpoint

DATA = Path(__file__).parent / "data"
REAL_CLIP = DATA / "bikes.mp4"
REAL_CLIP_HD = DATA / "bigbuckbunny.mp4"

# (file name, codec, pix_fmt, frames, height, width): several containers, codecs and aspect ratios.
GENERATED = [
    ("landscape_h264.mp4", "libx264", "yuv420p", 60, 48, 80),
    ("portrait_vp9.webm", "libvpx-vp9", "yuv420p", 30, 80, 48),
    ("square_mpeg4.avi", "mpeg4", "yuv420p", 40, 64, 64),
    ("short_mjpeg.mov", "mjpeg", "yuvj420p", 5, 40, 56),
]


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="session")
def other_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model with another configuration (for model-mismatch tests)."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt2") / "other", projection_dim=16, seed=1)


@pytest.fixture(scope="session")
def checkpoint(tiny_ckpt: Path):  # type: ignore[no-untyped-def]
    from xclip_search.checkpoint import load_checkpoint

    return load_checkpoint(str(tiny_ckpt), device="cpu")


def write_videos_in_subprocess(root: Path, specs: list[tuple[str, str, str, int, int, int]]) -> dict[str, Path]:
    """Encode test videos in a fresh interpreter: once decord is loaded, its bundled FFmpeg libraries break
    PyAV's VP9 encoder in the same process (avcodec_open2 returns EINVAL)."""
    code = (
        "import json, sys; from pathlib import Path\n"
        "from xclip_search.testing import synthetic_frames, write_video\n"
        "root = Path(sys.argv[1])\n"
        "for i, (name, codec, fmt, n, h, w) in enumerate(json.loads(sys.argv[2])):\n"
        "    write_video(root / name, synthetic_frames(n, h, w, seed=i), codec=codec, pix_fmt=fmt)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(root), json.dumps(specs)], check=True)
    return {name: root / name for name, *_ in specs}


@pytest.fixture(scope="session")
def generated_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_videos_in_subprocess(tmp_path_factory.mktemp("generated"), GENERATED)


@pytest.fixture()
def library(tmp_path: Path, generated_videos: dict[str, Path]) -> Path:
    """A folder of mixed clips: generated codecs, a real clip, a fake .mp4, a text file, a subfolder."""
    lib = tmp_path / "library"
    (lib / "sub").mkdir(parents=True)
    for i, src in enumerate(generated_videos.values()):
        shutil.copy(src, (lib / "sub" if i % 2 else lib) / src.name)
    shutil.copy(REAL_CLIP, lib / "bikes.mp4")
    (lib / "not_a_video.mp4").write_text("this is text, not a video\n")
    (lib / "notes.txt").write_text("ignored: not a video extension\n")
    return lib


# Clips a browser can play (H.264 in MP4, VP9 in WebM; both play in Debian's Chromium), 4 s each at 25 fps, so
# 1-second segments give moments that start after 0.
PLAYABLE = [
    ("red_walk_h264.mp4", "libx264", "yuv420p", 100, 96, 128),
    ("blue_spin_vp9.webm", "libvpx-vp9", "yuv420p", 100, 96, 128),
    ("green_jump_h264.mp4", "libx264", "yuv420p", 100, 72, 128),
]


@pytest.fixture(scope="session")
def playable_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_videos_in_subprocess(tmp_path_factory.mktemp("playable"), PLAYABLE)


@pytest.fixture(scope="session")
def serve_index(tmp_path_factory: pytest.TempPathFactory, tiny_ckpt: Path, playable_videos: dict[str, Path]) -> Path:
    """A published index of `playable_videos` (copied into their own library folder), 1-second segments."""
    from indexer import IndexOptions, run_index

    root = tmp_path_factory.mktemp("serve")
    lib = root / "library"
    lib.mkdir()
    for src in playable_videos.values():
        shutil.copy(src, lib / src.name)
    (lib / "broken.mp4").write_text("not a video\n")
    index_dir = root / "index"
    run_index([str(lib)], index_dir, model=str(tiny_ckpt), options=IndexOptions(segment_seconds=1, workers=0))
    return index_dir
