"""Fast unit tests of the demo clip generator (no torch, no network)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xclip_search.demo.clips import (
    COLOURS,
    MOTIONS,
    SHAPES,
    ClipSpec,
    caption_for,
    make_clip,
    make_scene_video,
    random_spec,
    render_clip,
    write_mp4,
)
from xclip_search.sampling import sample_frame_indices

REPO = Path(__file__).resolve().parent.parent
_PHRASE = rf"({'|'.join(COLOURS)}) ({'|'.join(SHAPES)}) ({'|'.join(MOTIONS)})"
CAPTION_RE = re.compile(rf"^{_PHRASE}( and {_PHRASE})?$")


def test_same_seed_same_clips_other_seed_other_clips() -> None:
    a = [make_clip(np.random.default_rng(7)) for _ in range(2)]
    b = make_clip(np.random.default_rng(7))
    c = make_clip(np.random.default_rng(8))
    assert a[0].spec == a[1].spec == b.spec
    assert np.array_equal(a[0].frames, b.frames)
    assert a[0].caption == b.caption
    assert c.spec != b.spec


def test_frames_shape_dtype_and_size_range() -> None:
    rng = np.random.default_rng(0)
    for size in (64, 96):
        for _ in range(10):
            clip = make_clip(rng, random_spec(rng, size=size))
            t, h, w, ch = clip.frames.shape
            assert clip.frames.dtype == np.uint8
            assert 16 <= t <= 32 and h == w == size and ch == 3


def test_caption_vocabulary_and_coverage() -> None:
    rng = np.random.default_rng(1)
    captions = [make_clip(rng).caption for _ in range(300)]
    for caption in captions:
        assert CAPTION_RE.match(caption), caption
    words = " ".join(captions)
    for word in [*COLOURS, *SHAPES, *MOTIONS]:
        assert word in words, word
    assert any(" and " in c for c in captions) and any(" and " not in c for c in captions)


def test_caption_is_order_independent() -> None:
    rng = np.random.default_rng(2)
    spec = next(s for s in (random_spec(rng, two_shape_prob=1.0) for _ in range(50)) if len(s.shapes) == 2)
    swapped = ClipSpec(**{**spec.__dict__, "shapes": spec.shapes[::-1]})
    assert caption_for(spec) == caption_for(swapped)


def test_partial_render_equals_full_render_and_spec_round_trip() -> None:
    spec = random_spec(np.random.default_rng(3))
    idx = sample_frame_indices(0, spec.num_frames, 8)
    assert np.array_equal(render_clip(spec)[idx], render_clip(spec, idx))
    again = ClipSpec.from_dict(spec.to_dict())
    assert again == spec and np.array_equal(render_clip(again), render_clip(spec))


def _shape_stats(frames: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mask = np.abs(frames.astype(int) - background.astype(int)).sum(-1) > 90
    area = mask.sum(axis=(1, 2)).astype(float)
    ys, xs = np.mgrid[0 : frames.shape[1], 0 : frames.shape[2]]
    cx = np.array([(xs * m).sum() / max(m.sum(), 1) for m in mask])
    cy = np.array([(ys * m).sum() / max(m.sum(), 1) for m in mask])
    return area, cx, cy


@pytest.mark.parametrize("motion", MOTIONS)
def test_pixels_show_what_the_caption_says(motion: str) -> None:
    """The 8 frames X-CLIP samples show the captioned motion (on a plain, noise-free background)."""
    rng = np.random.default_rng(4)
    for _ in range(5):
        spec = random_spec(rng, motion=motion, backgrounds=("solid",), max_noise=0.0)
        assert caption_for(spec).endswith(motion)
        frames = render_clip(spec, sample_frame_indices(0, spec.num_frames, 8))
        background = np.array(spec.background.rgb_a, dtype=np.uint8)
        area, cx, cy = _shape_stats(frames, background)
        if motion == "blinking":
            assert (area == 0).any() and (area > 0).any()
            continue
        assert (area > 0).all()
        if motion == "moving left":
            assert cx[-1] < cx[0] - 8
        elif motion == "moving right":
            assert cx[-1] > cx[0] + 8
        elif motion == "moving up":
            assert cy[-1] < cy[0] - 8
        elif motion == "moving down":
            assert cy[-1] > cy[0] + 8
        elif motion == "growing":
            assert area[-1] > 2 * area[0]
        elif motion == "shrinking":
            assert area[-1] < area[0] / 2


def test_scene_video_timings() -> None:
    video = make_scene_video(np.random.default_rng(5), 4, fps=12.0, frames_per_scene=(16, 30))
    assert len(video.scenes) == 4
    assert video.scenes[0].start_frame == 0 and video.scenes[-1].end_frame == len(video.frames)
    for prev, nxt in zip(video.scenes, video.scenes[1:], strict=False):
        assert prev.end_frame == nxt.start_frame
    for scene in video.scenes:
        assert 16 <= scene.end_frame - scene.start_frame <= 30
        assert scene.start == pytest.approx(scene.start_frame / 12.0)
        assert scene.end == pytest.approx(scene.end_frame / 12.0)
        assert scene.caption == caption_for(scene.spec)
        assert np.array_equal(video.frames[scene.start_frame : scene.end_frame], render_clip(scene.spec))
    assert video.duration == pytest.approx(len(video.frames) / 12.0)
    assert [s["end"] for s in video.scenes_json()] == [s.end for s in video.scenes]


def test_write_mp4_is_h264_with_every_frame(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    clip = make_clip(np.random.default_rng(6))
    path = tmp_path / "clip.mp4"
    write_mp4(path, clip.frames, 12.0)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert decoded.shape == clip.frames.shape
    assert np.abs(decoded.astype(int) - clip.frames.astype(int)).mean() < 12


def test_write_mp4_gives_the_same_bytes_every_time(tmp_path: Path) -> None:
    """x264's default macroblock tree made about 1 clip in 15 differ between encodes of the same frames."""
    pytest.importorskip("av")
    rng = np.random.default_rng(7)
    for k in range(40):
        clip = make_clip(rng)
        write_mp4(tmp_path / "a.mp4", clip.frames, 12.0)
        write_mp4(tmp_path / "b.mp4", clip.frames, 12.0)
        assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes(), f"clip {k}"


def test_clips_module_does_not_import_torch() -> None:
    code = "import sys, xclip_search.demo.clips; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False)
    assert result.returncode == 0
