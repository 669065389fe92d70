"""A server you can leave running: against a real server on a socket, aborted streams and seeks leak no file
descriptor, malformed ranges are refused, bodies and method names are bounded, expensive requests are refused
and the model thread is shared fairly between tagging and searches."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xclip_search.serve.app import ServeSettings
from xclip_search.serve.runner import serve_in_thread


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def until(condition, timeout: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    """Poll `condition` until it holds (the server closes descriptors after the client has gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


@pytest.fixture(scope="module")
def server(serve_index: Path) -> Iterator[tuple[str, int]]:
    with serve_in_thread(ServeSettings(index_dir=serve_index, port=0, warm=False)) as url:
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        yield host, int(port)


def request(addr: tuple[str, int], raw: bytes, *, read: bool = True) -> bytes:
    with socket.create_connection(addr, timeout=60) as sock:
        sock.sendall(raw)
        if not read:
            return b""
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def get(addr: tuple[str, int], path: str, headers: str = "") -> bytes:
    return request(addr, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n".encode())


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def a_video(addr: tuple[str, int]) -> int:
    import json

    body = get(addr, "/api/videos?status=indexed").split(b"\r\n\r\n", 1)[1]
    if b"\r\n" in body.split(b"{", 1)[0]:  # chunked transfer encoding: drop the chunk sizes
        body = body.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
    return int(json.loads(body)["videos"][0]["video_id"])


def aborted_stream(addr: tuple[str, int], video_id: int, range_header: str, *, read_some: bool) -> None:
    with socket.create_connection(addr, timeout=60) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /api/videos/{video_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n{range_header}\r\n".encode())
        if read_some:
            sock.recv(1024)  # streaming has started: the browser seeks away mid-body
        # Reset the connection rather than closing it politely, as a browser cancelling a media request may.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def test_aborted_streams_and_seeks_leak_no_descriptor(server: tuple[str, int]) -> None:
    video_id = a_video(server)
    for i in range(20):  # warm up: the server's thread pool and catalog connections reach their size
        aborted_stream(server, video_id, "", read_some=bool(i % 2))
    assert status_of(get(server, "/api/health")) == 200
    baseline = open_fds()
    for i in range(500):
        if i % 2:  # a browser seeking: a Range request abandoned after the first bytes
            aborted_stream(server, video_id, f"Range: bytes={i * 7}-\r\n", read_some=True)
        else:  # a request abandoned before the response starts
            aborted_stream(server, video_id, "", read_some=False)
    assert until(lambda: open_fds() <= baseline + 5), f"{open_fds() - baseline} descriptors leaked"
    assert status_of(get(server, "/api/health")) == 200
    assert status_of(get(server, f"/api/videos/{video_id}/stream", "Range: bytes=0-9\r\n")) == 206


@pytest.mark.parametrize("value", ["bytes=\u00b2-", "bytes=0-\u00b9", "bytes=\u0661-5", "bytes=-\uff15", "bytes=x-"])
def test_non_ascii_digits_in_a_range_are_refused_without_a_leak(server: tuple[str, int], value: str) -> None:
    video_id = a_video(server)
    before = open_fds()
    raw = f"GET /api/videos/{video_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
    response = request(server, raw + b"Range: " + value.encode("utf-8") + b"\r\n\r\n")
    assert status_of(response) == 416 and b"content-range: bytes */" in response.lower()
    assert until(lambda: open_fds() <= before)


# -- bounded requests ---------------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_huge_declared_body_is_refused_before_it_is_read(server: tuple[str, int]) -> None:
    head = (
        "POST /api/tag HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {1 << 30}\r\n\r\n"
    )
    response = request(server, head.encode() + b'{"labels": "')
    assert status_of(response) == 413
    assert response.split(b"\r\n\r\n", 1)[1].startswith(b'{"error": "Request body too large')


def test_a_streamed_1gb_body_is_refused_without_memory_growth(server: tuple[str, int]) -> None:
    import select

    chunk = b"a" * (1 << 20)
    before = peak = rss_bytes()
    sent = 0
    response = b""
    with socket.create_connection(server, timeout=60) as sock:
        sock.sendall(
            b"POST /api/tag HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            while sent < (1 << 30):  # 1 GB, generated one chunk at a time
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                peak = max(peak, rss_bytes())
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while data := sock.recv(65536):
                response += data
        except ConnectionResetError:
            pass
    peak = max(peak, rss_bytes())
    assert response and status_of(response) == 413, response[:200]
    assert sent < 64 << 20, f"the server read {sent >> 20} MB before refusing"
    assert peak - before < 50 << 20, f"memory grew by {(peak - before) >> 20} MB"


def test_random_method_names_do_not_grow_metrics(serve_index: Path) -> None:
    import random
    import string

    from .test_serve_api import make_client

    rng = random.Random(0)
    with make_client(serve_index) as c:
        statuses = set()
        for _ in range(10_000):
            method = "".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(3, 12)))
            statuses.add(c.request(method, rng.choice(["/api/health", "/api/search", "/nowhere", "/"])).status_code)
        assert statuses == {501}
        assert c.post("/api/health").status_code == 405  # a method of the table, not on this path
        assert c.get("/api/health").status_code == 200
        metrics = c.get("/metrics")
        assert len(metrics.content) < 100_000, len(metrics.content)
        assert 'method="other"' in metrics.text


def test_expensive_tag_and_search_requests_get_a_one_line_413(
    serve_index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from xclip_search.serve import limits

    from .test_serve_api import make_client

    monkeypatch.setattr(limits, "MAX_TAG_SCORES", 20)
    monkeypatch.setattr(limits, "MAX_RERANK", 5)
    with make_client(serve_index) as c:
        r = c.post("/api/tag", json={"labels": ["a", "b", "c"], "limit": 10})  # 3 labels x 10 segments
        assert r.status_code == 413, r.text
        assert "30 scores" in r.json()["error"] and "\n" not in r.text and r.json()["hint"]
        assert c.post("/api/tag", json={"labels": ["a", "b"], "limit": 10}).status_code == 200
        r = c.get("/api/search", params={"q": "a dog", "candidates": 10})
        assert r.status_code == 413 and "re-rank" in r.json()["error"]
        assert c.get("/api/search", params={"q": "a dog", "candidates": 10, "rerank": "false"}).status_code == 200
        assert c.get("/api/search", params={"q": "a dog", "top_k": 3, "candidates": 5}).status_code == 200
        json.loads(r.text)


def test_a_search_runs_before_the_rest_of_an_expensive_tagging_request(
    serve_index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tagging request holds the model thread for one slice at a time: a search queued meanwhile runs next."""
    import threading

    from xclip_search.serve import modelqueue

    from .test_serve_api import make_client

    monkeypatch.setattr(modelqueue, "SLICE_SCORES", 1)  # one segment per slice
    monkeypatch.setattr(modelqueue, "TEXT_SLICE", 1)  # one label's text per warm-up slice
    with make_client(serve_index) as c:
        service = c.app.state.service  # type: ignore[attr-defined]
        video_id = c.get("/api/videos", params={"status": "indexed"}).json()["videos"][0]["video_id"]
        c.get("/api/search", params={"q": "load the model"})
        queue = service._model
        order: list[str] = []
        in_first_slice, release = threading.Event(), threading.Event()
        original_run, original_tag = queue.run, service.index.tag_index

        def run(work, *, bulk=False):  # type: ignore[no-untyped-def]
            def recorded():  # type: ignore[no-untyped-def]
                result = work()
                order.append("tag slice" if bulk else "search")  # on the model thread: the true order
                return result

            return original_run(recorded, bulk=bulk)

        def slow_tag(*args, **kwargs):  # type: ignore[no-untyped-def]
            if not in_first_slice.is_set():
                in_first_slice.set()
                assert release.wait(60)
            return original_tag(*args, **kwargs)

        monkeypatch.setattr(queue, "run", run)
        monkeypatch.setattr(service.index, "tag_index", slow_tag)
        tagged: list[dict[str, Any]] = []
        tagger = threading.Thread(target=lambda: tagged.append(service.tag_video(video_id, ["a", "b"]).to_dict()))
        tagger.start()
        assert in_first_slice.wait(60)
        searcher = threading.Thread(target=lambda: service.search("a dog", top_k=3))
        searcher.start()
        assert until(lambda: len(queue._interactive) == 1)  # the search waits behind the running slice
        release.set()
        tagger.join(60)
        searcher.join(60)
        n_segments = len(c.get(f"/api/videos/{video_id}").json()["segments"])
        assert n_segments >= 3
        # Two text slices (one per label), the first segment's slice (held), the search, then the other segments.
        assert order == ["tag slice"] * 3 + ["search"] + ["tag slice"] * (n_segments - 1), order
        assert tagged and len(tagged[0]["segments"]) == n_segments


def test_start_up_hides_the_loaded_model_from_full_garbage_collections(serve_index: Path) -> None:
    """After the server loads the model, the objects alive are frozen out of the cyclic collector: full
    collections walked all ~430,000 of them and paused searches for up to 240 ms under tagging load."""
    import gc

    from xclip_search.serve.app import _warm

    from .test_serve_api import make_client

    gc.unfreeze()
    try:
        with make_client(serve_index) as c:
            service = c.app.state.service  # type: ignore[attr-defined]
            assert gc.get_freeze_count() == 0
            _warm(service)  # what the server's start-up runs in the background (warm=False in tests)
            assert service.index.model_loaded
            assert gc.get_freeze_count() > 10_000  # the model's modules and tensors among them
    finally:
        gc.unfreeze()


def test_a_search_whose_client_left_is_taken_off_the_model_queue(serve_index: Path) -> None:
    """Search as you type aborts the previous request: a search still waiting for the model thread when its
    client goes is never run (the clients still waiting get the thread sooner), and the metrics count it."""
    import threading

    from xclip_search.serve.app import create_app

    settings = ServeSettings(index_dir=serve_index, port=0, warm=False)
    app = create_app(settings)
    service = app.state.service
    with serve_in_thread(settings, app=app) as url:
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        addr = (host, int(port))
        assert status_of(get(addr, "/api/search?q=warm+up")) == 200  # the model is loaded
        searched: list[str] = []
        real_search = service.index.search
        service.index.search = lambda query, **kw: (searched.append(query), real_search(query, **kw))[1]
        started, release = threading.Event(), threading.Event()
        busy = service._model.submit(lambda: (started.set(), release.wait(60)))  # the thread is taken
        assert started.wait(60)
        with socket.create_connection(addr, timeout=60) as sock:
            sock.sendall(b"GET /api/search?q=stale HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert until(lambda: len(service._model._interactive) == 1)  # queued behind the busy thread
        # The client has gone (the socket is closed): the server notices while the search is still queued.
        skipped = {"outcome": "skipped"}
        count = "xclip_search_searches_abandoned_total"
        assert until(lambda: service.metrics.registry.get_sample_value(count, skipped) == 1.0)
        release.set()
        busy.result(60)
        assert status_of(get(addr, "/api/search?q=still+here")) == 200
        assert searched == ["still here"]  # "stale" never ran
        service.index.search = real_search


def test_too_many_concurrent_tagging_requests_get_429() -> None:
    import threading

    from xclip_search.errors import ServerBusyError
    from xclip_search.serve.modelqueue import ModelQueue

    queue = ModelQueue(max_bulk_requests=1)
    started, release = threading.Event(), threading.Event()

    def blocking() -> int:
        started.set()
        assert release.wait(60)
        return 1

    worker = threading.Thread(target=lambda: queue.run_bulk(blocking))
    worker.start()
    assert started.wait(60)
    with pytest.raises(ServerBusyError):
        queue.run_bulk(lambda: 2)
    release.set()
    worker.join(60)
    assert queue.run_bulk(lambda: 4) == 4
    queue.shutdown()


def test_sliced_tagging_equals_one_pass(serve_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xclip_search.serve import modelqueue

    from .test_serve_api import make_client

    labels = ["a red square", "something blue", "jumping", "a dog"]
    with make_client(serve_index) as c:
        whole = c.post("/api/tag", json={"labels": labels, "limit": 100}).json()
        monkeypatch.setattr(modelqueue, "SLICE_SCORES", 5)  # one segment per slice
        monkeypatch.setattr(modelqueue, "TEXT_SLICE", 1)  # and one label's text per warm-up slice
        c.app.state.service.index._tagger = None  # type: ignore[attr-defined]  # a cold text cache
        sliced = c.post("/api/tag", json={"labels": labels, "limit": 100}).json()
    assert len(sliced["results"]) == len(whole["results"]) >= 12
    for a, b in zip(whole["results"], sliced["results"], strict=True):
        assert a["segment_id"] == b["segment_id"]
        assert [x["label"] for x in a["labels"]] == [x["label"] for x in b["labels"]]
        assert [x["prob"] for x in a["labels"]] == pytest.approx([x["prob"] for x in b["labels"]], abs=1e-5)


def test_health_reports_an_unreadable_manifest(serve_index: Path, tmp_path: Path) -> None:
    import shutil

    from .test_serve_api import make_client

    copy = tmp_path / "index"
    shutil.copytree(serve_index, copy)
    with make_client(copy) as c:
        assert c.get("/api/health").json()["status"] == "ok"
        good = (copy / "manifest.json").read_bytes()
        (copy / "manifest.json").write_bytes(b"{ garbage")
        r = c.get("/api/health")
        assert r.status_code == 503, r.text
        data = r.json()
        assert data["status"] == "error" and data["error"] and "manifest" in data["error"].lower(), data
        assert data["generation"] >= 1  # still serving the last good generation
        assert c.get("/api/search", params={"q": "a dog"}).status_code == 200
        (copy / "manifest.json").unlink()
        assert c.get("/api/health").status_code == 503
        (copy / "manifest.json").write_bytes(good)
        assert c.get("/api/health").json()["status"] == "ok"


def test_tagging_slices_are_sized_by_time() -> None:
    """The next slice takes about the budget at the last slice's cost per item: growing at most twofold from
    one item, shrinking at once when items turn out expensive, within [1, cap]."""
    from xclip_search.serve.modelqueue import SlicePacer

    pacer = SlicePacer(cap=64, budget=0.010)
    seen = [pacer.count]
    for seconds in (0.001, 0.002, 0.004, 0.008):  # 1 ms an item: doubles up to the budget's 10 items
        pacer.record(pacer.count, seconds)
        seen.append(pacer.count)
    assert seen == [1, 2, 4, 8, 10]
    pacer.record(10, 0.100)  # items became 10 ms each: one per slice
    assert pacer.count == 1
    pacer.record(1, 0.500)  # never below one item
    assert pacer.count == 1
    pacer.record(1, 0.0)  # too fast to measure: grows, within the cap
    assert pacer.count == 2
    capped = SlicePacer(cap=3, budget=1.0)
    capped.record(2, 0.001)
    assert capped.count == 3


def test_bulk_slices_and_searches_get_their_own_thread_counts() -> None:
    """The threads hook runs before a job whose kind differs from the last one's, on the model thread."""
    import threading

    from xclip_search.serve.modelqueue import ModelQueue

    calls: list[tuple[bool, str]] = []
    queue = ModelQueue(threads=lambda bulk: calls.append((bulk, threading.current_thread().name)))
    try:
        queue.run(lambda: 1)
        queue.run(lambda: 2, bulk=True)
        queue.run(lambda: 3, bulk=True)
        queue.run(lambda: 4)
        queue.run(lambda: 5)
    finally:
        queue.shutdown()
    assert calls == [(False, "xclip-model"), (True, "xclip-model"), (False, "xclip-model")]


def test_a_tagging_answer_is_rendered_on_the_model_thread(serve_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every segment's JSON entry is made inside a model-thread slice, never on a request thread, where it would
    compete with a running search for the GIL; the answer is the same JSON as before."""
    import threading

    from xclip_search.serve import service as service_module

    from .test_serve_api import make_client

    threads: list[str] = []
    original = service_module.render_json

    def recorded(value: Any) -> bytes:
        if isinstance(value, dict) and "segment_id" in value:
            threads.append(threading.current_thread().name)
        return original(value)

    monkeypatch.setattr(service_module, "render_json", recorded)
    with make_client(serve_index) as c:
        whole = c.post("/api/tag", json={"labels": ["a red square", "a dog"], "top": 1, "limit": 100})
        video_id = whole.json()["results"][0]["video_id"]
        one = c.post("/api/tag", json={"labels": ["a red square", "a dog"], "video_id": video_id})
    assert whole.status_code == 200 and one.status_code == 200
    data = whole.json()
    assert data["total"] == len(data["results"]) >= 12 and data["offset"] == 0
    assert all(len(r["labels"]) == 1 and {"segment_id", "video_id", "path", "start"} <= set(r) for r in data["results"])
    video = one.json()
    assert video["video_id"] == video_id and len(video["labels"]) == 2
    assert sum(x["prob"] for x in video["labels"]) == pytest.approx(1.0)
    assert len(threads) == len(data["results"]) + len(video["segments"])
    assert set(threads) == {"xclip-model"}
