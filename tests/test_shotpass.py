"""The one-pass shots decode (`indexer.shotpass`) gives exactly what the two passes give: the cuts of
`detect_cuts` on exact frames, the plans of `plan_video`, decord's frames resized and cropped, the same thumbnails;
and when it gives up midway, the file is decoded the two-pass way under a new attempt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer import shotpass
from indexer.decoders import DECODERS
from indexer.extract import ExtractSpec, SegmentCrops, decode_file, extract
from indexer.segments import Segmentation, SegmentPlan, plan_video
from indexer.shots import detect_cuts
from xclip_search.pixels import PixelConfig, resize_and_crop
from xclip_search.sampling import sample_frame_indices
from xclip_search.thumbnails import make_thumbnail

from .conftest import REAL_CLIP, REAL_CLIP_HD

PIXELS = PixelConfig.from_preprocessor_dict({"size": 32}, image_size=32)
SETTINGS = Segmentation(segment_seconds=2.0, min_shot_seconds=0.5)  # several shots, long ones in several windows


def spec(settings: Segmentation = SETTINGS) -> ExtractSpec:
    return ExtractSpec(num_frames=8, pixels=PIXELS).with_segmentation(settings)


@pytest.fixture(scope="module")
def scene_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xclip_search.demo import clips

    video = clips.make_scene_video(np.random.default_rng(3), 6, fps=12.0, frames_per_scene=(8, 60), size=96)
    path = tmp_path_factory.mktemp("shotpass") / "scenes.mp4"
    clips.write_mp4(path, video.frames, fps=12.0)
    return path


def two_passes(path: Path, settings: Segmentation) -> list[tuple[SegmentPlan, np.ndarray, bytes]]:
    """The reference: cuts from a pass of their own over exact frames, then decord's sampled frames."""
    video = DECODERS["decord"].open(str(path))
    try:
        n, fps = video.info.num_frames, video.info.fps
        out = []
        for plan in plan_video(n, fps, settings, detect_cuts(str(path), exact=True)):
            indices = sample_frame_indices(plan.frame_start, plan.frame_end, 8)
            unique = sorted(set(indices))
            frames = dict(zip(unique, video.iter_frames(unique), strict=True))
            crops = np.stack([resize_and_crop(frames[i][None], PIXELS)[0] for i in indices])
            out.append((plan, crops, make_thumbnail(frames[indices[len(indices) // 2]])))
        return out
    finally:
        video.close()


def one_pass(path: Path, settings: Segmentation = SETTINGS) -> list[SegmentCrops]:
    kept = [m for m in decode_file(str(path), spec(settings)) if isinstance(m, SegmentCrops)]
    return [s for s in kept if s.attempt == kept[-1].attempt]


def assert_same(got: list[SegmentCrops], want: list[tuple[SegmentPlan, np.ndarray, bytes]]) -> None:
    assert [s.plan for s in got] == [w[0] for w in want]
    for s, (_, crops, thumb) in zip(got, want, strict=True):
        assert np.array_equal(s.crops, crops)
        assert s.thumbnail == thumb


@pytest.mark.parametrize("name", ["scenes", "bikes", "bunny"])
@pytest.mark.parametrize("buffers", ["default", "tiny buffer", "nothing held"])
def test_one_pass_equals_the_two_passes(
    scene_video: Path, name: str, buffers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = {"scenes": scene_video, "bikes": REAL_CLIP, "bunny": REAL_CLIP_HD}[name]
    if buffers != "default":  # frames converted as they leave a one-frame buffer; or none kept: seeks fetch them
        monkeypatch.setattr(shotpass, "BUFFER_BYTES", 1)
    if buffers == "nothing held":
        monkeypatch.setattr(shotpass, "HELD_BYTES", 0)
    messages = list(decode_file(str(path), spec()))
    got = [m for m in messages if isinstance(m, SegmentCrops)]
    assert {s.attempt for s in got} == {0}  # not abandoned
    want = two_passes(path, SETTINGS)
    assert len(want) > (4 if name != "bunny" else 2)
    assert_same(got, want)
    ext = extract(str(path), spec())
    assert ext.decoder == "pyav" and len(ext.segments) == len(want)


def test_a_sent_segment_that_a_later_cut_contradicts_restarts_the_file(
    scene_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Send every planned segment at once (wrongly): the next cut contradicts them, the pass gives up, and the
    # file is decoded again under attempt 1 with the right segments.
    monkeypatch.setattr(shotpass._State, "settled", lambda self, limit: len(self.plan))
    got = [m for m in decode_file(str(scene_video), spec()) if isinstance(m, SegmentCrops)]
    assert {s.attempt for s in got} == {0, 1}
    assert_same([s for s in got if s.attempt == 1], two_passes(scene_video, SETTINGS))


def test_the_segment_cap_is_left_to_the_two_passes(scene_video: Path) -> None:
    capped = Segmentation(segment_seconds=1.0, min_shot_seconds=0.5, max_segments=3)
    got = one_pass(scene_video, capped)
    assert {s.attempt for s in got} == {1}
    assert_same(got, two_passes(scene_video, capped))


def test_only_shots_mode_with_the_cpu_decoders_takes_one_pass() -> None:
    assert shotpass.applies(SETTINGS, ("decord", "pyav"), True)
    assert shotpass.applies(SETTINGS, ("pyav",), True)
    assert not shotpass.applies(SETTINGS, ("decord", "pyav"), False)  # forward-only containers
    assert not shotpass.applies(SETTINGS, ("nvdec", "decord", "pyav"), True)
    assert not shotpass.applies(Segmentation(mode="fixed"), ("decord", "pyav"), True)


def test_decode_workers_import_neither_torch_nor_the_store() -> None:
    """What a worker imports at start (`indexer.worker.main`) costs every worker start: no torch, no SQLAlchemy."""
    import subprocess
    import sys

    code = (
        "import sys, av, indexer.decoders, indexer.worker, indexer.extract, indexer.protocol, indexer.shotpass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'sqlalchemy') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
