"""Searches through the server while another process indexes into the same directory: every response must
describe exactly one published generation (never a half-written one), and the server must move forward."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from xclip_search.store.catalog import Catalog

from .test_serve_api import make_client

# One generation per video (commit_every=1), so the server has many generations to move through.
INDEXER = """
import sys
from indexer import IndexOptions, run_index
run_index([sys.argv[1]], sys.argv[2], options=IndexOptions(segment_seconds=1, workers=0, commit_every=1))
"""


def test_searches_never_see_a_half_published_index(
    serve_index: Path, playable_videos: dict[str, Path], tmp_path: Path
) -> None:
    index_dir = tmp_path / "index"
    shutil.copytree(serve_index, index_dir)
    more = tmp_path / "more"
    more.mkdir()
    for i in range(2):
        for src in playable_videos.values():
            shutil.copy(src, more / f"{i}-{src.name}")
    n_new = 2 * len(playable_videos)

    seen: list[dict[str, Any]] = []
    errors: list[str] = []
    with make_client(index_dir) as client:
        client.get("/api/search", params={"q": "warm up"})  # load the model before the race starts
        proc = subprocess.Popen([sys.executable, "-c", INDEXER, str(more), str(index_dir)], stderr=subprocess.PIPE)
        stop = threading.Event()

        def search_loop(query: str) -> None:
            while not stop.is_set():
                r = client.get(
                    "/api/search",
                    params={"q": query, "top_k": 10_000, "candidates": 10_000, "per_video": "false"},
                )
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:300]}")
                    continue
                data = r.json()
                seen.append({"generation": data["generation"], "ids": [h["segment_id"] for h in data["results"]]})
                time.sleep(0.05)  # leave the indexer most of the CPU on a 2-core machine

        threads = [threading.Thread(target=search_loop, args=(q,)) for q in ("a square moving", "something else")]
        for t in threads:
            t.start()
        try:
            _, stderr = proc.communicate(timeout=240)
        finally:
            time.sleep(0.3)  # let the loops read the final generation too
            stop.set()
            for t in threads:
                t.join(60)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        final = client.get("/api/search", params={"q": "final", "top_k": 10_000, "per_video": "false"}).json()

    assert not errors, errors[:3]
    generations = [s["generation"] for s in seen]
    catalog = Catalog.open(index_dir)
    try:
        last = catalog.latest_generation()
        assert final["generation"] == last and len(final["results"]) == 12 + 4 * n_new
        for s in seen:
            # Exactly the live segments of one published generation: no more, no fewer, none from another.
            live = set(catalog.live_segment_ids(s["generation"]).tolist())
            assert set(s["ids"]) == live and len(s["ids"]) == len(live), s["generation"]
    finally:
        catalog.close()
    assert len(seen) >= 10 and len(set(generations)) >= 2, generations
    first_gen = generations[0]
    assert all(g >= first_gen for g in generations)
    print(f"{len(seen)} searches over generations {sorted(set(generations))}")


def test_a_request_reads_one_snapshot(serve_index: Path, playable_videos: dict[str, Path], tmp_path: Path) -> None:
    """A search in flight keeps reading the generation it started with while another request moves the server
    to a newer one; the next search reads the newer one. Events order the steps (no sleeps)."""
    from indexer import IndexOptions, run_index

    index_dir = tmp_path / "index"
    shutil.copytree(serve_index, index_dir)
    more = tmp_path / "more"
    more.mkdir()
    src = next(iter(playable_videos.values()))
    shutil.copy(src, more / f"new-{src.name}")
    with make_client(index_dir) as client:
        service = client.app.state.service  # type: ignore[attr-defined]
        before = client.get("/api/search", params={"q": "warm up", "top_k": 100, "per_video": "false"}).json()
        old_generation = before["generation"]
        old_ids = {h["segment_id"] for h in before["results"]}
        snapshot = service.index.snapshot
        started, release = threading.Event(), threading.Event()
        real_coarse = snapshot.coarse

        def held_coarse(*args: Any, **kwargs: Any) -> Any:
            started.set()
            assert release.wait(120)
            return real_coarse(*args, **kwargs)

        snapshot.coarse = held_coarse  # the in-flight search stops in its first stage
        out: dict[str, Any] = {}

        def search() -> None:
            params = {"q": "in flight", "top_k": 100, "per_video": "false"}
            out["held"] = client.get("/api/search", params=params).json()

        thread = threading.Thread(target=search)
        thread.start()
        try:
            assert started.wait(120)
            run_index([str(more)], index_dir, options=IndexOptions(segment_seconds=1, workers=0))
            moved = client.get("/api/health").json()["generation"]  # another request refreshes the server
            assert moved > old_generation and service.index.snapshot is not snapshot
        finally:
            release.set()
            thread.join(120)
        held = out["held"]
        assert held["generation"] == old_generation
        assert {h["segment_id"] for h in held["results"]} == old_ids  # none of the new video's segments
        after = client.get("/api/search", params={"q": "after", "top_k": 100, "per_video": "false"}).json()
        assert after["generation"] == moved and len(after["results"]) == len(old_ids) + 4
        assert {h["segment_id"] for h in after["results"]} > old_ids
