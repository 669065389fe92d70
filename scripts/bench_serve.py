"""Search latency through the HTTP API against the library call it wraps, measured in the same run.

    flock /work/bench.lock python scripts/bench_serve.py --index xclip-index --queries 100
    flock /work/bench.lock python scripts/bench_serve.py --tiny        # builds a small index with a tiny model
    flock /work/bench.lock python scripts/bench_serve.py --demo --tag-load 3   # searches while tagging runs

Starts ``xclip-search serve`` as a child process (the real command, its own interpreter) and alternates distinct
text queries over one keep-alive HTTP connection with distinct queries through ``Index.search`` in this process.
Prints p50/p95 of both, their ratio (the API's overhead), and the server's own per-stage medians. Numbers depend
on the machine's load; compare ratios, and re-measure on a quiet machine.

``--tag-load N`` then measures search latency through the API while N clients keep sending expensive tagging
requests (1,000 long labels, never seen before, over a page of the whole index: the request that once stalled
searches for 17.8 s). The model thread is shared fairly (`serve.modelqueue`): a search waits for at most one
tagging slice, and no tagging work runs outside the slices. Prints p50/p95/p99 under load, their ratio to the
unloaded figures measured in the same run, the server's own ``queue`` timing (the wait for the model thread),
and the tagging requests served.

``--throughput 1,4,16`` then sends distinct text queries from 1, 4 and 16 concurrent keep-alive clients for
``--seconds`` each and prints queries per second, p50/p99, errors, and the server's resident memory before and
after (its growth must stay bounded: a leak shows up as growth at every level).

``--baseline-src DIR`` starts a second server from another source tree (for example ``git archive`` of the
commit before a change, unpacked) and alternates it with this tree's server and the library call, so a change's
effect on the API's latency and CPU is measured in one run, under the same machine load.

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
from typing import Any

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


def search_ms(client: Any, q: str, top_k: int, server: dict[str, list[float]] | None = None) -> float:
    """One search through the API: the client's milliseconds; the server's own timings go to `server`."""
    t0 = time.perf_counter()
    r = client.get("/api/search", params={"q": q, "top_k": top_k})
    ms = (time.perf_counter() - t0) * 1000
    r.raise_for_status()
    if server is not None:
        for stage, value in r.json()["timings_ms"].items():
            server.setdefault(stage, []).append(value)
    return ms


def spread(values: list[float]) -> str:
    return f"p50 {pct(values, 0.5):7.1f} ms  p95 {pct(values, 0.95):7.1f} ms  p99 {pct(values, 0.99):7.1f} ms"


def searches_under_tag_load(client: Any, n_clients: int, n_queries: int, top_k: int) -> dict[str, Any]:
    """Search latency (ms) while `n_clients` threads send expensive tagging requests, and without them (half
    before, half after, so both see the machine's other load)."""
    import httpx

    base = str(client.base_url)
    client.post("/api/tag", json={"labels": ["warm up"], "limit": 1}).raise_for_status()  # loads the tagger
    idle = [search_ms(client, q, top_k) for q in queries(n_queries // 2, "idle-before")]
    stop = threading.Event()
    tagged = {"ok": 0, "refused": 0, "failed": 0}
    in_flight = threading.Semaphore(0)

    def tag_loop(seed: int) -> None:
        with httpx.Client(base_url=base, timeout=600) as own:
            round_ = 0
            while not stop.is_set():
                labels = [f"{x} v{seed}.{round_}" for x in long_labels(1000)]  # never cached: full text cost
                if round_ == 0:
                    in_flight.release()
                r = own.post("/api/tag", json={"labels": labels, "limit": 1000})
                tagged["ok" if r.status_code == 200 else "refused" if r.status_code == 429 else "failed"] += 1
                round_ += 1

    threads = [threading.Thread(target=tag_loop, args=(i,), daemon=True) for i in range(n_clients)]
    for t in threads:
        t.start()
    for _ in threads:
        in_flight.acquire()
    time.sleep(1.0)  # let the tagging requests reach the model queue
    server: dict[str, list[float]] = {}
    loaded = [search_ms(client, q, top_k, server) for q in queries(n_queries, "loaded")]
    stop.set()
    for t in threads:
        t.join(600)
    idle += [search_ms(client, q, top_k) for q in queries(n_queries - n_queries // 2, "idle-after")]
    return {"idle": idle, "loaded": loaded, "server": server, **tagged}


def cpu_s(pid: int) -> float:
    """CPU seconds a process has used, all its threads (Linux): unlike wall time, barely moved by other load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def throughput(url: str, pid: int, levels: list[int], seconds: float, top_k: int) -> list[dict[str, float]]:
    """Queries per second, latency and errors with `levels` concurrent keep-alive clients, each for `seconds`;
    the server's resident memory before and after each level."""
    import httpx

    rows = []
    for n in levels:
        before = rss_mb(pid)
        latencies: list[float] = []
        errors = [0]
        deadline = time.perf_counter() + seconds

        def client_loop(
            seed: int,
            n: int = n,
            deadline: float = deadline,
            latencies: list[float] = latencies,
            errors: list[int] = errors,
        ) -> None:
            with httpx.Client(base_url=url, timeout=120) as own:
                i = 0
                while time.perf_counter() < deadline:
                    q = f"{WORDS[(seed + i) % len(WORDS)]} c{n}.{seed}.{i}"  # distinct: no cached text
                    t0 = time.perf_counter()
                    try:
                        r = own.get("/api/search", params={"q": q, "top_k": top_k})
                        ok = r.status_code == 200 and "results" in r.json()
                    except httpx.HTTPError:
                        ok = False
                    latencies.append((time.perf_counter() - t0) * 1000)
                    errors[0] += 0 if ok else 1
                    i += 1

        started = time.perf_counter()
        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        rows.append(
            {
                "clients": n,
                "queries": len(latencies),
                "qps": len(latencies) / elapsed,
                "p50": pct(latencies, 0.5),
                "p99": pct(latencies, 0.99),
                "errors": errors[0],
                "rss_before": before,
                "rss_after": rss_mb(pid),
            }
        )
    return rows


def start_server(source: Path, index_dir: Path, device: str, threads: int | None) -> tuple[subprocess.Popen[str], str]:
    """``xclip-search serve`` from the source tree `source` (its own interpreter) on a free port; its URL."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source.resolve()), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "xclip_search", "serve", "--index", str(index_dir), "--port", "0", "--json"]
    cmd += ["--device", device] + (["--threads", str(threads)] if threads else [])
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=source)
    assert server.stdout is not None
    return server, json.loads(server.stdout.readline())["url"].rstrip("/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, help="index directory to serve")
    parser.add_argument("--tiny", action="store_true", help="build a small index with a tiny random model")
    parser.add_argument("--demo", action="store_true", help="build the demo index (bundled demonstration model)")
    parser.add_argument("--queries", type=int, default=50, help="queries per side")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--server-threads", type=int, help="the server's --threads (threads one search may use)")
    parser.add_argument("--skip-direct", action="store_true", help="skip the API-against-library comparison")
    parser.add_argument("--tag-load", type=int, default=0, help="then search while N clients tag (0: skip)")
    parser.add_argument("--throughput", default="", help="then concurrent clients, e.g. 1,4,16 (empty: skip)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per throughput level")
    parser.add_argument("--baseline-src", type=Path, help="also serve from this source tree, alternated (A/B)")
    args = parser.parse_args(argv)
    if sum([args.index is not None, args.tiny, args.demo]) != 1:
        parser.error("pass --index DIR, --tiny or --demo")

    import httpx

    from xclip_search import Index

    levels = [int(x) for x in args.throughput.split(",") if x.strip()]
    if args.server_threads:
        Index.set_model_threads(args.server_threads)  # the library side with the server's threads
    with tempfile.TemporaryDirectory() as tmp:
        index_dir = args.index or (build_demo_index(Path(tmp)) if args.demo else build_tiny_index(Path(tmp)))
        loaded: dict[str, Any] | None = None
        rows: list[dict[str, float]] = []
        api_ms: list[float] = []
        direct_ms: list[float] = []
        overhead_ms: list[float] = []
        base_ms: list[float] = []
        cpu_api = cpu_direct = cpu_base = 0.0
        stages: dict[str, list[float]] = {}
        direct_stages: dict[str, list[float]] = {}
        server, url = start_server(Path(__file__).resolve().parents[1], index_dir, args.device, args.server_threads)
        baseline = baseline_url = None
        if args.baseline_src is not None:
            baseline, baseline_url = start_server(args.baseline_src, index_dir, args.device, args.server_threads)
        try:
            with (
                httpx.Client(base_url=url, timeout=120) as client,
                httpx.Client(base_url=baseline_url or url, timeout=120) as base_client,
                Index.open(index_dir, device=args.device) as index,
            ):
                client.get("/api/search", params={"q": "warm up"}).raise_for_status()
                if baseline is not None:
                    base_client.get("/api/search", params={"q": "warm up"}).raise_for_status()
                segments = index.info()["segments"]
                if not args.skip_direct:
                    index.search("warm up", top_k=args.top_k)
                    # Alternate the two sides so that both see the same machine load.
                    pairs = zip(queries(args.queries, "api"), queries(args.queries, "direct"), strict=True)
                    for q_api, q_direct in pairs:
                        server_side: dict[str, list[float]] = {}
                        cpu0 = cpu_s(server.pid)
                        api_ms.append(search_ms(client, q_api, args.top_k, server_side))
                        cpu_api += cpu_s(server.pid) - cpu0
                        overhead_ms.append(api_ms[-1] - server_side["total"][0])  # HTTP, JSON, thread hops
                        for stage, ms in server_side.items():
                            stages.setdefault(stage, []).extend(ms)
                        t0, cpu0 = time.perf_counter(), time.process_time()
                        found = index.search(q_direct, top_k=args.top_k)
                        direct_ms.append((time.perf_counter() - t0) * 1000)
                        cpu_direct += time.process_time() - cpu0
                        for stage, sec in found.timings.items():
                            direct_stages.setdefault(stage, []).append(sec * 1000)
                        if baseline is not None:
                            cpu0 = cpu_s(baseline.pid)
                            base_ms.append(search_ms(base_client, q_api + " base", args.top_k))
                            cpu_base += cpu_s(baseline.pid) - cpu0
                if args.tag_load > 0:
                    loaded = searches_under_tag_load(client, args.tag_load, args.queries, args.top_k)
                if levels:
                    rows = throughput(url, server.pid, levels, args.seconds, args.top_k)
        finally:
            for proc in (server, baseline):
                if proc is not None:
                    proc.terminate()
                    proc.wait(30)

    print(f"index: {index_dir} ({segments} segments), {args.queries} distinct queries per side, top-k {args.top_k}")
    if api_ms:
        api50, direct50 = statistics.median(api_ms), statistics.median(direct_ms)
        print(f"API    {spread(api_ms)}")
        print(f"direct {spread(direct_ms)}")
        paired = statistics.median(a - d for a, d in zip(api_ms, direct_ms, strict=True))
        print(
            f"API - direct (p50): {api50 - direct50:+.2f} ms, ratio {api50 / direct50:.2f}; "
            f"p50 of the paired differences (each API search against the library search next to it) {paired:+.2f} ms"
        )
        print(f"HTTP overhead per request (client time - server total): p50 {statistics.median(overhead_ms):.2f} ms")
        n = len(api_ms)
        print(
            f"CPU per search: server {cpu_api / n * 1000:.2f} ms (HTTP included), "
            f"library {cpu_direct / n * 1000:.2f} ms"
            f": the API costs {(cpu_api - cpu_direct) / n * 1000:+.2f} ms of CPU (barely moved by other load)"
        )
        if base_ms:
            base50 = statistics.median(base_ms)
            print(f"baseline API ({args.baseline_src}) {spread(base_ms)}")
            print(
                f"  this tree against the baseline (p50): {api50 - base50:+.2f} ms, ratio {api50 / base50:.2f}; "
                f"baseline - direct {base50 - direct50:+.2f} ms; baseline CPU per search {cpu_base / n * 1000:.2f} ms"
            )
            paired_ab = statistics.median(a - b for a, b in zip(api_ms, base_ms, strict=True))
            paired_bd = statistics.median(b - d for b, d in zip(base_ms, direct_ms, strict=True))
            print(f"  paired p50: this tree - baseline {paired_ab:+.2f} ms, baseline - direct {paired_bd:+.2f} ms")
        print("server stages p50:  " + ", ".join(f"{k} {statistics.median(v):.2f} ms" for k, v in stages.items()))
        print(
            "library stages p50: " + ", ".join(f"{k} {statistics.median(v):.2f} ms" for k, v in direct_stages.items())
        )
    if loaded is not None:
        idle, under = loaded["idle"], loaded["loaded"]
        queue = loaded["server"].get("queue", [0.0])
        print(f"search, no load:             {spread(idle)}")
        print(f"search, {args.tag_load} tagging clients:  {spread(under)}  max {max(under):.1f} ms (target p95 < 200)")
        p50_ratio, p95_ratio = pct(under, 0.5) / pct(idle, 0.5), pct(under, 0.95) / pct(idle, 0.95)
        print(
            f"  ratio loaded/unloaded: p50 {p50_ratio:.2f}, p95 {p95_ratio:.2f}"
            f"; server queue wait p50 {pct(queue, 0.5):.1f} ms, p95 {pct(queue, 0.95):.1f} ms, max {max(queue):.1f} ms"
        )
        print(
            f"  tagging requests (1,000 new long labels x up to 1,000 segments): {loaded['ok']} served, "
            f"{loaded['refused']} refused (429), {loaded['failed']} failed"
        )
    for row in rows:
        print(
            f"throughput, {row['clients']:2.0f} clients: {row['qps']:6.1f} queries/s  p50 {row['p50']:7.1f} ms  "
            f"p99 {row['p99']:7.1f} ms  errors {row['errors']:.0f}/{row['queries']:.0f}  server RSS "
            f"{row['rss_before']:.0f} -> {row['rss_after']:.0f} MB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
