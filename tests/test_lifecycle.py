"""A library that lives for years, through the real command line: nights of deletes, additions, in-place
rewrites, moves and touches, each followed by a plain ``xclip-search index --prune --json``.

Every night's report is checked against what was done to the files (moves listed as moves, only new and rewritten
files encoded, a broken file reported as failed, then as still failed, until it is deleted); the vectors of moved
and touched files are the ones they had (same segment ids: nothing re-encoded). At the end the index answers
exactly like a fresh index of the final library and its directory is at most 1.3x the fresh one's.

Nights are simulated by moving the wall clock a day forward per cycle (compaction keeps retired files for a
grace of minutes for readers on older generations; a nightly library never sees them pile up).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from xclip_search import Index
from xclip_search.cli import cli

from .conftest import write_videos_in_subprocess
from .synthetic import one_faiss_thread

__all__ = ["one_faiss_thread"]  # an autouse fixture: imported to apply to this module

CYCLES = 8
QUERIES = ("a red square moving left", "a person riding a bike", "a dog on a beach", "waves at sunset")
FOLDERS = ("a", "b", "c/d")


@pytest.fixture(scope="module")
def clip_pool(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Distinct short H.264 clips (1-3 s, each its own content): the initial library, then each night's new and
    rewritten files."""
    specs = [(f"clip{i:02d}.mp4", "libx264", "yuv420p", 25 + (i * 7) % 50, 48, 64) for i in range(12 + 4 * CYCLES)]
    return list(write_videos_in_subprocess(tmp_path_factory.mktemp("pool"), specs).values())


def index(*args: str) -> tuple[int, dict[str, object], float]:
    started = time.perf_counter()
    result = CliRunner().invoke(cli, ["index", *args, "--json"], catch_exceptions=False)
    seconds = time.perf_counter() - started
    assert result.exit_code in (0, 3), result.stderr
    return result.exit_code, json.loads(result.stdout), seconds


def segment_ids(idx: Path) -> dict[str, list[int]]:
    """Live segment ids by video path: a video keeps them while its vectors are not re-encoded."""
    with Index.open(idx) as ix:
        ids = ix.catalog.live_segment_ids(ix.generation).tolist()
        rows = ix.catalog.segment_rows(ids, ix.generation)
    out: dict[str, list[int]] = {}
    for seg_id, row in sorted(rows.items()):
        out.setdefault(str(row["path"]), []).append(seg_id)
    return out


def answers(idx: Path) -> list[tuple[str, float, float, float]]:
    with Index.open(idx, device="cpu") as ix:
        return [
            (h.path, h.start, h.end, h.score)
            for q in QUERIES
            for per_video in (True, False)
            for h in ix.search(q, top_k=50, per_video=per_video)
        ]


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_nightly_runs_for_many_cycles_stay_like_a_fresh_index(
    tmp_path: Path, tiny_ckpt: Path, clip_pool: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(14)
    lib, idx = tmp_path / "lib", tmp_path / "idx"
    for folder in FOLDERS:
        (lib / folder).mkdir(parents=True)
    pool = list(clip_pool)
    for i in range(12):
        shutil.copy(pool.pop(0), lib / FOLDERS[i % 3] / f"v{i:02d}.mp4")
    first_args = ("--model", str(tiny_ckpt), "--segment-seconds", "1")
    code, report, _ = index(str(lib), "--index", str(idx), *first_args)
    assert code == 0 and report["indexed"] == 12

    real_time = time.time
    seconds: list[float] = []
    broken = lib / "b" / "broken.mp4"
    for night in range(1, CYCLES + 1):
        monkeypatch.setattr(time, "time", lambda night=night: real_time() + night * 86400.0)
        before = segment_ids(idx)
        files = sorted(p for p in lib.rglob("*.mp4") if p != broken)
        rng.shuffle(files)
        deleted, rewritten, renamed, copied, touched = files[:2], files[2:3], files[3:4], files[4:5], files[5:7]
        for p in deleted:
            p.unlink()
        for p in rewritten:  # re-encoded in place: same path and inode, new content
            shutil.copyfile(pool.pop(0), p)
        moves = []
        for p in renamed:  # a rename: same inode
            dest = lib / rng.choice(FOLDERS) / f"n{night}_{p.name}"
            os.rename(p, dest)
            moves.append((p, dest))
        for p in copied:  # a move across file systems: a new inode, same bytes and mtime
            dest = lib / rng.choice(FOLDERS) / f"x{night}_{p.name}"
            shutil.copy2(p, dest)
            p.unlink()
            moves.append((p, dest))
        for p in touched:  # a new mtime, the same content
            st = p.stat()
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + night * 10**9))
        added = [lib / rng.choice(FOLDERS) / f"new{night}_{k}.mp4" for k in range(3)]
        for p in added:
            shutil.copy(pool.pop(0), p)
        if night == 2:
            broken.write_bytes(b"\x00" * 3000)  # a file that cannot be decoded
        if night == 5:
            broken.unlink()

        code, report, took = index(str(lib), "--index", str(idx), "--prune")
        seconds.append(took)
        assert report["indexed"] == len(added) + len(rewritten)  # encoded: new and rewritten files only
        assert report["removed"] == len(deleted) + (night == 5)
        assert sorted((m["from"], m["to"]) for m in report["moves"]) == sorted((str(a), str(b)) for a, b in moves)
        assert report["moved"] == len(moves)
        assert report["failed"] == (night == 2) and report["still_failed"] == (night in (3, 4))
        assert [f["path"] for f in report["still_failures"]] == ([str(broken)] if night in (3, 4) else [])
        assert code == (3 if night in (2, 3, 4) else 0)
        after = segment_ids(idx)
        for old, new in moves:  # the vectors followed the file
            assert after[str(new)] == before[str(old)]
        for p in touched:
            assert after[str(p)] == before[str(p)]
        for p in rewritten:
            assert set(after[str(p)]).isdisjoint(before[str(p)])

    fresh = tmp_path / "fresh"
    code, report, fresh_s = index(str(lib), "--index", str(fresh), *first_args)
    assert code == 0
    assert answers(idx) == answers(fresh)
    after_last_run = dir_bytes(idx)  # with the files the last compaction retired (kept for older readers)
    # The next night changes nothing: the run writes nothing new, and its writer deletes the retired files.
    monkeypatch.setattr(time, "time", lambda: real_time() + (CYCLES + 1) * 86400.0)
    code, quiet, _ = index(str(lib), "--index", str(idx), "--prune")
    assert code == 0 and (quiet["indexed"], quiet["moved"], quiet["removed"]) == (0, 0, 0)
    assert answers(idx) == answers(fresh)
    size, fresh_size = dir_bytes(idx), dir_bytes(fresh)
    print(
        f"\nlifecycle: {CYCLES} nights, {report['indexed']} videos at the end; index {size} B = "
        f"{size / fresh_size:.2f}x a fresh one ({fresh_size} B), {after_last_run / fresh_size:.2f}x right after the "
        f"last run (retired files kept for older readers); nightly runs {min(seconds):.1f}-{max(seconds):.1f} s "
        f"(mean {sum(seconds) / len(seconds):.1f} s), the fresh index {fresh_s:.1f} s"
    )
    assert size <= 1.3 * fresh_size
