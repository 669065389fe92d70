"""Search latency through the HTTP API against the library call it wraps, measured in the same run.

    flock /work/bench.lock python scripts/bench_serve.py --index xclip-index --queries 100
    flock /work/bench.lock python scripts/bench_serve.py --tiny        # builds a small index with a tiny model
    flock /work/bench.lock python scripts/bench_serve.py --demo --tag-load 3   # searches while tagging runs

Starts ``xclip-search serve`` as a child process (the real command, its own interpreter) and alternates distinct
text queries over one keep-alive HTTP connection with distinct queries through ``Index.search`` in this process.
Prints p50/p95 of both, their ratio (the API's overhead), and the server's own per-stage medians. Numbers depend
on the machine's load; compare ratios, and re-measure on a quiet machine.

``--tag-load N`` then measures search latency through the API while N clients keep sending expensive tagging
requests (1,000 long labels over a page of the whole index, the request that once stalled searches for 17.8 s):
the model thread is shared fairly (`serve.modelqueue`), so a search waits for at most one tagging slice. Prints
p50/p95 under load, the ratio to the unloaded p50 measured in the same run, and the tagging requests served.
``--demo`` builds the demo index (``xclip-search demo``: the bundled demonstration model) to measure on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

WORDS = ["a dog", "a red square", "someone cooking", "a car", "waves", "a bike", "snow", "a crowd", "a cat", "rain"]


def queries(n: int, salt: str) -> list[str]:
    # Distinct strings: the encoder caches text embeddings per string, and a cached query is not a search.
    return [f"{WORDS[i % len(WORDS)]} {salt} {i}" for i in range(n)]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def build_tiny_index(root: Path) -> Path:
    from xclip_search.testing import make_tiny_checkpoint, synthetic_frames, write_video

    ckpt = make_tiny_checkpoint(root / "ckpt")
    lib = root / "lib"
    lib.mkdir()
    for i in range(12):
        write_video(lib / f"clip{i:02d}.mp4", synthetic_frames(100, 96, 128, seed=i), fps=10)
    index = root / "index"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "xclip_search",
            "index",
            str(lib),
            "--index",
            str(index),
            "--model",
            str(ckpt),
            "--segment-seconds",
            "2",
            "--json",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return index


def build_demo_index(root: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "xclip_search", "demo", "--dir", str(root / "demo"), "--json"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return root / "demo" / "index"


def long_labels(n: int) -> list[str]:
    return [f"{WORDS[i % len(WORDS)]} doing something rather long and specific in scene number {i}" for i in range(n)]


def searches_under_tag_load(client: object, n_clients: int, n_queries: int, top_k: int) -> dict[str, float]:
    """Search latency (ms) while `n_clients` threads send expensive tagging requests, and the unloaded p50."""
    import httpx

    assert isinstance(client, httpx.Client)
    base = str(client.base_url)
    client.post("/api/tag", json={"labels": ["warm up"], "limit": 1}).raise_for_status()  # loads the tagger
    idle_ms = []
    for q in queries(n_queries, "idle"):
        t0 = time.perf_counter()
        client.get("/api/search", params={"q": q, "top_k": top_k}).raise_for_status()
        idle_ms.append((time.perf_counter() - t0) * 1000)
    stop = threading.Event()
    tagged = {"ok": 0, "refused": 0}

    def tag_loop(seed: int) -> None:
        with httpx.Client(base_url=base, timeout=600) as own:
            round_ = 0
            while not stop.is_set():
                labels = [f"{x} v{seed}.{round_}" for x in long_labels(1000)]  # never cached: full text cost
                r = own.post("/api/tag", json={"labels": labels, "limit": 1000})
                tagged["ok" if r.status_code == 200 else "refused"] += 1
                round_ += 1

    threads = [threading.Thread(target=tag_loop, args=(i,), daemon=True) for i in range(n_clients)]
    for t in threads:
        t.start()
    time.sleep(2.0)  # let the tagging requests fill the model queue
    loaded_ms = []
    for q in queries(n_queries, "loaded"):
        t0 = time.perf_counter()
        client.get("/api/search", params={"q": q, "top_k": top_k}).raise_for_status()
        loaded_ms.append((time.perf_counter() - t0) * 1000)
    stop.set()
    for t in threads:
        t.join(600)
    return {
        "idle_p50": statistics.median(idle_ms),
        "loaded_p50": statistics.median(loaded_ms),
        "loaded_p95": pct(loaded_ms, 0.95),
        "loaded_max": max(loaded_ms),
        "tag_ok": tagged["ok"],
        "tag_refused": tagged["refused"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, help="index directory to serve")
    parser.add_argument("--tiny", action="store_true", help="build a small index with a tiny random model")
    parser.add_argument("--demo", action="store_true", help="build the demo index (bundled demonstration model)")
    parser.add_argument("--tag-load", type=int, default=0, help="then search while N clients tag (0: skip)")
    parser.add_argument("--queries", type=int, default=50, help="queries per side")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if sum([args.index is not None, args.tiny, args.demo]) != 1:
        parser.error("pass --index DIR, --tiny or --demo")

    import httpx

    from xclip_search import Index

    with tempfile.TemporaryDirectory() as tmp:
        index_dir = args.index or (build_demo_index(Path(tmp)) if args.demo else build_tiny_index(Path(tmp)))
        loaded: dict[str, float] | None = None
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
        }
        cmd = [sys.executable, "-m", "xclip_search", "serve", "--index", str(index_dir), "--port", "0", "--json"]
        server = subprocess.Popen([*cmd, "--device", args.device], stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert server.stdout is not None
            url = json.loads(server.stdout.readline())["url"].rstrip("/")
            with httpx.Client(base_url=url, timeout=120) as client, Index.open(index_dir, device=args.device) as index:
                client.get("/api/search", params={"q": "warm up"}).raise_for_status()
                index.search("warm up", top_k=args.top_k)
                segments = index.info()["segments"]
                api_ms: list[float] = []
                direct_ms: list[float] = []
                stages: dict[str, list[float]] = {}
                # Alternate the two sides so that both see the same machine load.
                for q_api, q_direct in zip(queries(args.queries, "api"), queries(args.queries, "direct"), strict=True):
                    t0 = time.perf_counter()
                    r = client.get("/api/search", params={"q": q_api, "top_k": args.top_k})
                    api_ms.append((time.perf_counter() - t0) * 1000)
                    r.raise_for_status()
                    for stage, ms in r.json()["timings_ms"].items():
                        stages.setdefault(stage, []).append(ms)
                    t0 = time.perf_counter()
                    index.search(q_direct, top_k=args.top_k)
                    direct_ms.append((time.perf_counter() - t0) * 1000)
                if args.tag_load > 0:
                    loaded = searches_under_tag_load(client, args.tag_load, args.queries, args.top_k)
        finally:
            server.terminate()
            server.wait(30)

    print(f"index: {index_dir} ({segments} segments), {args.queries} distinct queries per side, top-k {args.top_k}")
    print(f"API    p50 {statistics.median(api_ms):8.2f} ms   p95 {pct(api_ms, 0.95):8.2f} ms")
    print(f"direct p50 {statistics.median(direct_ms):8.2f} ms   p95 {pct(direct_ms, 0.95):8.2f} ms")
    print(f"ratio API/direct (p50): {statistics.median(api_ms) / statistics.median(direct_ms):.2f}")
    print("server stages p50: " + ", ".join(f"{k} {statistics.median(v):.2f} ms" for k, v in stages.items()))
    if loaded is not None:
        print(
            f"under {args.tag_load} tagging clients (1,000 labels x a page of the index): search p50 "
            f"{loaded['loaded_p50']:.1f} ms, p95 {loaded['loaded_p95']:.1f} ms, max {loaded['loaded_max']:.1f} ms "
            f"(target < 200 ms); unloaded p50 {loaded['idle_p50']:.1f} ms, ratio "
            f"{loaded['loaded_p50'] / loaded['idle_p50']:.2f}; tagging requests served {loaded['tag_ok']:.0f}, "
            f"refused {loaded['tag_refused']:.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
