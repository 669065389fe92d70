"""``xclip-search demo`` as a user runs it: a child process, generated library, index, searches, tagging.

The tiny random checkpoint makes the answers meaningless but exercises every step and the JSON shape quickly;
`test_demo_model.py` checks what the bundled demonstration model gets right.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from xclip_search.demo.run import LABELS, SAID_QUERY, Truth, caption_at, judge, pick_queries

REPO = Path(__file__).resolve().parents[1]


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "xclip_search", "demo", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, tiny_ckpt: Path) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("demo") / "run"
    proc = run_demo("--dir", str(out), "--model", str(tiny_ckpt), "--json")
    assert proc.returncode == 0, proc.stderr
    return out, json.loads(proc.stdout)


def test_json_shape_and_library(demo_run: tuple[Path, dict[str, Any]]) -> None:
    out, d = demo_run
    assert set(d) == {"library", "index", "model", "indexed", "searches", "tagging", "seconds"}
    assert d["indexed"] == {"indexed": 21, "unchanged": 0, "failed": 0, "segments": 18 + 3 * 4}
    truth = json.loads((out / "library" / "captions.json").read_text())["files"]
    assert len(truth) == 21 and sum(len(t) for t in truth.values()) == 30
    assert [s["query"] for s in d["searches"]][-2:] == [SAID_QUERY, "blinking"] and len(d["searches"]) == 5
    for search in d["searches"]:
        assert [h["rank"] for h in search["results"]] == [1, 2, 3]
        for hit in search["results"]:
            assert {"rank", "video_id", "path", "start", "end", "score", "coarse_score"} <= set(hit)
            rows = truth[Path(hit["path"]).name]
            # the shown truth is the scene under the best segment, and "correct" is judged against it
            assert hit["caption"] == caption_at([Truth(**r) for r in rows], hit["best_start"], hit["best_end"])
            assert hit["correct"] == judge(search["query"], search["judged_by"], hit["caption"], hit["said"])
    assert len(d["tagging"]) == 7
    for row in d["tagging"]:
        assert len(row["labels"]) == 3 and {x["label"] for x in row["labels"]} <= set(LABELS)
        assert row["correct"] == (row["labels"][0]["label"] in row["caption"])
    # the seven new clips show the seven motions, and none of them is in the index
    assert sorted(next(m for m in LABELS if m in r["caption"]) for r in d["tagging"]) == sorted(LABELS)


def test_a_said_line_is_found_only_through_the_subtitles(demo_run: tuple[Path, dict[str, Any]]) -> None:
    out, d = demo_run
    said = next(s for s in d["searches"] if s["judged_by"] == "said")
    # The narration is in scenes-N.srt, never on screen: the first hit is the scene it is said over, as speech.
    top = said["results"][0]
    assert top["correct"] and top["match"] in ("speech", "both") and SAID_QUERY in top["cue"]["text"].lower()
    assert top["start"] <= top["cue"]["start"] and top["cue"]["end"] <= top["end"]
    assert (out / "library" / "scenes-2.srt").is_file()


def test_scene_queries_point_at_scenes_inside_longer_videos(demo_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = demo_run
    truth = json.loads((out / "library" / "captions.json").read_text())["files"]
    queries = pick_queries({k: [Truth(**t) for t in v] for k, v in truth.items()})
    scene_captions = {t["caption"] for name, rows in truth.items() if name.startswith("scenes-") for t in rows}
    assert queries[0][0] in scene_captions and queries[1][0] in scene_captions


def test_second_run_reuses_library_and_index(demo_run: tuple[Path, dict[str, Any]], tiny_ckpt: Path) -> None:
    out, first = demo_run
    stamp = (out / "library" / "clip-01.mp4").stat().st_mtime_ns
    proc = run_demo("--dir", str(out), "--model", str(tiny_ckpt), "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["indexed"] == {"indexed": 0, "unchanged": 21, "failed": 0, "segments": 0}
    assert (out / "library" / "clip-01.mp4").stat().st_mtime_ns == stamp
    assert [[h["path"] for h in s["results"]] for s in d["searches"]] == [
        [h["path"] for h in s["results"]] for s in first["searches"]
    ]


def test_readable_output(tmp_path: Path, tiny_ckpt: Path) -> None:
    proc = run_demo("--dir", str(tmp_path / "run"), "--model", str(tiny_ckpt))
    assert proc.returncode == 0, proc.stderr
    assert 'search "blinking"' in proc.stdout
    assert "tag new clips with the 7 motions" in proc.stdout
    assert "xclip-search serve --index" in proc.stdout


def test_bad_model_is_one_line_error(tmp_path: Path) -> None:
    proc = run_demo("--dir", str(tmp_path / "run"), "--model", str(tmp_path / "no-such-model"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: ") and "Traceback" not in proc.stderr


def test_eval_runs_on_the_demo_ground_truth_out_of_the_box(demo_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = demo_run
    truth = out / "library" / "ground-truth.jsonl"
    lines = [json.loads(line) for line in truth.read_text().splitlines()]
    # every distinct caption over the library, plus each scene within its scene video (3 videos x 4 scenes)
    assert sum(1 for x in lines if "within" in x) == 12
    proc = subprocess.run(
        [sys.executable, "-m", "xclip_search", "eval", str(truth), "--index", str(out / "index"), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["queries"] == len(lines) and report["with_spans"] == len(lines)
    assert set(report["stages"]) == {"first_stage", "rerank", "exhaustive"}
    for stage in report["stages"].values():
        assert set(stage) == {"recall@1", "recall@5", "recall@10", "median_rank", "mrr", "mean_iou"}
        # within-video queries always find their video first: recall@1 is at least their share
        assert stage["recall@1"] >= 12 / len(lines) and 0.0 <= stage["mean_iou"] <= 1.0
