"""Search latency through the HTTP API against the library call it wraps, measured in the same run.

    flock /work/bench.lock python scripts/bench_serve.py --index xclip-index --queries 100
    flock /work/bench.lock python scripts/bench_serve.py --tiny        # builds a small index with a tiny model

Starts ``xclip-search serve`` as a child process (the real command, its own interpreter) and alternates distinct
text queries over one keep-alive HTTP connection with distinct queries through ``Index.search`` in this process.
Prints p50/p95 of both, their ratio (the API's overhead), and the server's own per-stage medians. Numbers depend
on the machine's load; compare ratios, and re-measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, help="index directory to serve")
    parser.add_argument("--tiny", action="store_true", help="build a small index with a tiny random model")
    parser.add_argument("--queries", type=int, default=50, help="queries per side")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if (args.index is None) == (not args.tiny):
        parser.error("pass --index DIR or --tiny")

    import httpx

    from xclip_search import Index

    with tempfile.TemporaryDirectory() as tmp:
        index_dir = args.index or build_tiny_index(Path(tmp))
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
        finally:
            server.terminate()
            server.wait(30)

    print(f"index: {index_dir} ({segments} segments), {args.queries} distinct queries per side, top-k {args.top_k}")
    print(f"API    p50 {statistics.median(api_ms):8.2f} ms   p95 {pct(api_ms, 0.95):8.2f} ms")
    print(f"direct p50 {statistics.median(direct_ms):8.2f} ms   p95 {pct(direct_ms, 0.95):8.2f} ms")
    print(f"ratio API/direct (p50): {statistics.median(api_ms) / statistics.median(direct_ms):.2f}")
    print("server stages p50: " + ", ".join(f"{k} {statistics.median(v):.2f} ms" for k, v in stages.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
