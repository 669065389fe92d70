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


def test_a_request_reads_one_snapshot(serve_index: Path) -> None:
    """Refreshing happens when a request starts: a snapshot pinned by one request is not replaced under it."""
    with make_client(serve_index) as client:
        service = client.app.state.service  # type: ignore[attr-defined]
        pinned = service.pin()
        assert service.pin() is pinned  # nothing published: the same snapshot object
        (serve_index / "manifest.json").touch()  # a changed manifest file (same content) is re-read...
        again = service.pin()
        assert again.generation == pinned.generation  # ...and the generation stays
