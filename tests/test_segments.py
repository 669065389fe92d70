from __future__ import annotations

import itertools

import pytest

from indexer.segments import plan_segments
from xclip_search.errors import InvalidArgumentError


def test_whole_video_is_one_segment() -> None:
    (seg,) = plan_segments(250, 25.0, 0)
    assert (seg.frame_start, seg.frame_end, seg.start_s, seg.end_s) == (0, 250, 0.0, 10.0)


def test_windows_are_consecutive_and_cover_the_video() -> None:
    segs = plan_segments(25 * 95, 25.0, 10)
    assert [s.seq for s in segs] == list(range(len(segs)))
    assert segs[0].frame_start == 0 and segs[-1].frame_end == 25 * 95
    assert all(a.frame_end == b.frame_start for a, b in itertools.pairwise(segs))
    assert segs[1].start_s == pytest.approx(10.0)


def test_short_tail_merges_into_the_previous_window() -> None:
    segs = plan_segments(250 + 50, 25.0, 10)  # 12 s: the 2 s tail is under half a window
    assert [(s.start_s, s.end_s) for s in segs] == [(0.0, 12.0)]
    segs = plan_segments(250 + 150, 25.0, 10)  # 16 s: a 6 s tail is a window of its own
    assert [(s.start_s, s.end_s) for s in segs] == [(0.0, 10.0), (10.0, 16.0)]


def test_very_short_video_is_one_segment() -> None:
    assert len(plan_segments(3, 25.0, 10)) == 1


def test_cap_lengthens_windows_instead_of_dropping_footage() -> None:
    segs = plan_segments(25 * 3600, 25.0, 10, max_segments=60)
    assert len(segs) == 60
    assert segs[-1].frame_end == 25 * 3600
    assert segs[0].end_s == pytest.approx(60.0)


def test_unknown_fps_falls_back_to_25() -> None:
    assert plan_segments(100, 0.0, 0)[0].end_s == pytest.approx(4.0)


@pytest.mark.parametrize("seconds", [-1.0, float("nan"), float("inf")])
def test_invalid_segment_length(seconds: float) -> None:
    with pytest.raises(InvalidArgumentError):
        plan_segments(100, 25.0, seconds)
