"""The page's strip shows shots (issue 15): `GET /api/videos/{id}` lists a video's shots, read through
`Index.shots_of`, on an index with shot-aligned segments; segments without a shot number stand alone."""

from __future__ import annotations

from pathlib import Path

from indexer import IndexOptions, run_index
from xclip_search.index import Index, SegmentRow
from xclip_search.store.records import group_shots

from .conftest import REAL_CLIP
from .test_serve_api import make_client


def _row(i: int, shot: int | None, video_id: int = 1) -> SegmentRow:
    return SegmentRow(i, video_id, i, float(i), float(i + 1), i * 10, i * 10 + 10, "s", i, "v.mp4", shot=shot)


def test_group_shots_joins_consecutive_segments_of_one_shot_and_keeps_null_ones_alone() -> None:
    rows = [_row(0, 0), _row(1, 0), _row(2, 1), _row(3, None), _row(4, None), _row(5, 2), _row(6, 2), _row(7, 2)]
    shots = group_shots(rows)
    assert [[s.id for s in shot.segments] for shot in shots] == [[0, 1], [2], [3], [4], [5, 6, 7]]
    assert [(shot.start_s, shot.end_s) for shot in shots] == [(0, 2), (2, 3), (3, 4), (4, 5), (5, 8)]
    assert [shot.representative.id for shot in shots] == [0, 2, 3, 4, 6]


def test_video_json_lists_shots_of_a_shot_aligned_index(tmp_path: Path, tiny_ckpt: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "bikes.mp4").write_bytes(REAL_CLIP.read_bytes())  # an edited film with cuts
    idx = tmp_path / "idx"
    run_index([str(lib)], idx, model=str(tiny_ckpt), options=IndexOptions(segment_seconds=2, workers=0))
    with Index.open(idx, device="cpu") as index:
        video_id = index.videos()[1][0].video.id
        segments = index.segments_of(video_id)
    assert len(segments) == 7 and all(s.shot is not None for s in segments)
    with make_client(idx) as client:
        data = client.get(f"/api/videos/{video_id}").json()
    # Existing fields unchanged: every live segment, in time order.
    assert [s["segment_id"] for s in data["segments"]] == [s.id for s in segments]
    shots = data["shots"]
    assert 1 < len(shots) < len(segments)  # some shots were split into windows; they show as one
    assert [i for shot in shots for i in shot["segment_ids"]] == [s.id for s in segments]
    by_id = {s.id: s for s in segments}
    for shot in shots:
        members = [by_id[i] for i in shot["segment_ids"]]
        assert len({m.shot for m in members}) == 1
        assert shot["shot"] == members[0].shot
        assert shot["start"] == round(members[0].start_s, 3) and shot["end"] == round(members[-1].end_s, 3)
        thumb = members[(len(members) - 1) // 2].id
        assert shot["thumbnail_url"] == f"/api/segments/{thumb}/thumbnail"
    assert len({shot["shot"] for shot in shots}) == len(shots)  # each detected shot shows once
    assert any(len(shot["segment_ids"]) > 1 for shot in shots)
