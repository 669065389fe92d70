"""The byte protocol between the pool and its decode workers: a JSON header and an optional raw array.

Each message is ``<u32 header length><u64 payload length><header JSON><payload>``. Arrays travel as their raw
bytes with dtype and shape in the header, so nothing is pickled and a worker that dies mid-message shows up as
a short read (end of file), never as a half-parsed object.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

import numpy as np

_PREFIX = struct.Struct("<IQ")
MAX_HEADER = 1 << 20


class ProtocolError(Exception):
    """The other side closed the pipe or sent something malformed."""


def write_message(fd: int, header: dict[str, Any], array: np.ndarray | None = None) -> None:
    """Write one message to the file descriptor `fd` (blocking until all of it is written)."""
    if array is not None:
        array = np.ascontiguousarray(array)
        header = {**header, "array": {"dtype": array.dtype.str, "shape": list(array.shape)}}
    body = json.dumps(header, separators=(",", ":")).encode()
    payload = memoryview(array.data).cast("B") if array is not None else memoryview(b"")
    _write_all(fd, _PREFIX.pack(len(body), payload.nbytes) + body)
    if payload.nbytes:
        _write_all(fd, payload)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_message(fd: int) -> tuple[dict[str, Any], np.ndarray | None]:
    """Read one message; raises `ProtocolError` at end of file or on a malformed message."""
    head_len, payload_len = _PREFIX.unpack(_read_exact(fd, _PREFIX.size))
    if head_len > MAX_HEADER:
        raise ProtocolError(f"message header of {head_len} bytes")
    header = json.loads(_read_exact(fd, head_len))
    if not isinstance(header, dict):
        raise ProtocolError("message header is not an object")
    array = None
    if payload_len:
        spec = header.get("array") or {}
        dtype = np.dtype(str(spec.get("dtype", "|u1")))
        shape = tuple(int(x) for x in spec.get("shape", [payload_len]))
        if dtype.hasobject or int(np.prod(shape)) * dtype.itemsize != payload_len:
            raise ProtocolError("array payload does not match its header")
        array = np.frombuffer(_read_exact(fd, payload_len), dtype=dtype).reshape(shape)
    return header, array


def _read_exact(fd: int, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if k == 0:
            raise ProtocolError("end of file")
        got += k
    return buf
