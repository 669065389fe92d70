"""A server you can leave running: against a real server on a socket, aborted streams and seeks leak no file
descriptor, malformed ranges are refused, bodies and method names are bounded, expensive requests are refused
and the model thread is shared fairly between tagging and searches."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

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
