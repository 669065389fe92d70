from __future__ import annotations

import pytest

from xclip_search.errors import InvalidArgumentError
from xclip_search.sampling import sample_frame_indices

from .reference import reference_indices


@pytest.mark.parametrize("start,end", [(0, 250), (0, 132), (0, 8), (0, 3), (0, 1), (100, 350), (7, 19), (0, 7)])
@pytest.mark.parametrize("t", [8, 16, 32])
def test_indices_follow_the_videox_formula(start: int, end: int, t: int) -> None:
    got = sample_frame_indices(start, end, t)
    assert got == reference_indices(start, end, t)
    assert len(got) == t
    assert all(start <= i < end for i in got)
    assert got == sorted(got)


def test_whole_video_centres_each_part() -> None:
    # 80 frames, 8 parts of 10: the middle frame of each part.
    assert sample_frame_indices(0, 80, 8) == [5, 15, 25, 35, 45, 55, 65, 75]


def test_short_segments_repeat_frames() -> None:
    assert sample_frame_indices(0, 3, 8) == [0, 0, 0, 1, 1, 2, 2, 2]


@pytest.mark.parametrize("start,end,t", [(5, 5, 8), (5, 4, 8), (-1, 10, 8), (0, 10, 0)])
def test_invalid_ranges_are_refused(start: int, end: int, t: int) -> None:
    with pytest.raises(InvalidArgumentError):
        sample_frame_indices(start, end, t)
