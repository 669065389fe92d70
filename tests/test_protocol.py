"""The decode workers' messages: each one comes back from the pipe as it was sent; anything else is refused."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

from indexer.decoders import VideoInfo
from indexer.extract import ExtractSpec, FileSummary, failure_of
from indexer.probe import Probe
from indexer.protocol import (
    Config,
    Done,
    Exit,
    Failed,
    Message,
    ProtocolError,
    Ready,
    Segment,
    Task,
    Tick,
    receive,
    send,
    write_message,
)
from indexer.segments import SegmentPlan
from xclip_search.errors import VideoError, VideoLimitError
from xclip_search.pixels import PixelConfig

CROPS = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
SPEC = ExtractSpec(num_frames=8, pixels=PixelConfig.from_preprocessor_dict({"size": 32}, image_size=32))


@pytest.fixture()
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


MESSAGES: list[Message] = [
    Config(SPEC),
    Task(7, "/videos/a b.mp4", "probe"),
    Exit(),
    Ready(1234),
    Tick(7),
    Segment(
        7, 1, SegmentPlan(2, 50, 75, 2.0, 3.0), np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3), b"\xff"
    ),
    Done(
        7,
        "abc",
        Probe(width=64, height=48, duration_s=2.5, codec="h264", container="mp4", fps=24.0, frames=60),
        FileSummary("pyav", VideoInfo(60, 24.0, 64, 48), "h264", 2.5, 3, warnings=1, notes=["decord: failed"]),
        ["a warning"],
        1,
    ),
    Failed(7, "skipped", "longer than 6 h", "abc", [], 0, oom=False),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_the_pipe(pipe: tuple[int, int], message: Message) -> None:
    r, w = pipe
    send(w, message)
    got = receive(r)
    assert type(got) is type(message)
    if isinstance(message, Segment):
        assert isinstance(got, Segment)
        assert (got.id, got.attempt, got.plan, got.thumbnail) == (7, 1, message.plan, b"\xff")
        assert np.array_equal(got.crops, message.crops) and got.crops.dtype == np.uint8
    else:
        assert got == message


@pytest.mark.parametrize(
    "header",
    [{"type": "launch"}, {"no": "type"}, {"type": "task", "id": 1}, {"type": "segment", "id": 1, "attempt": 0}],
)
def test_an_unknown_or_incomplete_message_is_a_protocol_error(pipe: tuple[int, int], header: dict[str, object]) -> None:
    r, w = pipe
    write_message(w, header)
    with pytest.raises(ProtocolError):
        receive(r)


def test_a_closed_pipe_is_a_protocol_error() -> None:
    reader, writer = os.pipe()
    os.close(writer)  # a worker that died before it wrote anything
    try:
        with pytest.raises(ProtocolError):
            receive(reader)
    finally:
        os.close(reader)


@pytest.mark.parametrize(
    ("exc", "status", "reason"),
    [
        (VideoLimitError("larger than 7680x4320"), "skipped", "larger than 7680x4320"),
        (VideoError("moov atom not found"), "failed", "moov atom not found"),
        (MemoryError(), "failed", "out of memory"),
        (PermissionError(13, "Permission denied"), "failed", "cannot read the file: Permission denied"),
        (ZeroDivisionError("division by zero"), "failed", "ZeroDivisionError: division by zero"),
    ],
)
def test_one_mapping_from_exception_to_status(exc: Exception, status: str, reason: str) -> None:
    failure = failure_of(exc, "hash")
    assert (failure.status, failure.reason, failure.content_hash) == (status, reason, "hash")
    assert failure.oom == isinstance(exc, MemoryError)
