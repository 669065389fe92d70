"""The messages between the pool and its decode workers, and the bytes they travel as.

The pool sends `Config` (the `ExtractSpec`, once per worker), `Task` (one file) and `Exit`, the server's
thumbnail jobs `FrameTask` (one frame, answered by `Frame` or `Failed`) and speech transcription `AudioTask`
(a file's sound, answered by `Audio` or `Failed`); a worker answers
`Ready` once started, then per task any number of `Segment` (with its cropped frames) and `Tick` (progress for
the pool's timeout), and last `Done` or `Failed`. Each message class has one `encode` (to a JSON header and an
optional array) and one `decode` (back); `send` and `receive` move them over a file descriptor, so neither side
builds or reads a header by hand.

On the wire each message is ``<u32 header length><u64 payload length><header JSON><payload>``. Arrays travel
as their raw bytes with dtype and shape in the header, so nothing is pickled and a worker that dies
mid-message shows up as a short read (end of file), never as a half-parsed object. Workers import no torch,
and neither does this module.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from xclip_search.errors import ProtocolError

from .extract import ExtractSpec, FileSummary
from .probe import Probe
from .segments import SegmentPlan

_PREFIX = struct.Struct("<IQ")
MAX_HEADER = 8 << 20  # a file's summary carries its embedded subtitles (at most ~2 MB of text)

Header = dict[str, Any]


# The reason of a file whose segments do not add up to its summary's count: a broken protocol, never indexed.
LOST_SEGMENTS = "segments lost between processes"


# -- pool -> worker ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """What every task of this worker extracts."""

    spec: ExtractSpec
    kind: ClassVar[str] = "config"

    def encode(self) -> tuple[Header, np.ndarray | None]:
        return {"spec": self.spec.to_dict()}, None

    @classmethod
    def decode(cls, header: Header, array: np.ndarray | None) -> Config:
        return cls(ExtractSpec.from_dict(header["spec"]))


@dataclass(frozen=True)
class Task:
    """One file to decode (`mode` extract) or only hash and probe (`mode` probe); `id` tells its answers from
    stale ones."""

    id: int
    path: str
    mode: str = "extract"
    kind: ClassVar[str] = "task"

    def encode(self) -> tuple[Header, np.ndarray | None]:
        return {"id": self.id, "path": self.path, "mode": self.mode}, None

    @classmethod
    def decode(cls, header: Header, array: np.ndarray | None) -> Task:
        return cls(int(header["id"]), str(header["path"]), str(header["mode"]))


@dataclass(frozen=True)
class Exit:
    """Finish: the worker exits after its current task."""

    kind: ClassVar[str] = "exit"

    def encode(self) -> tuple[Header, np.ndarray | None]:
        return {}, None

    @classmethod
    def decode(cls, header: Header, array: np.ndarray | None) -> Exit:
        return cls()


@dataclass(frozen=True)
class FrameTask:
    """One frame's JPEG thumbnail (the server's on-demand thumbnails, `framejobs`); needs no `Config`. The worker
    answers `Frame` or `Failed`."""

    id: int
    path: str
    frame: int
    fps: float | None = None
    kind: ClassVar[str] = "frame_task"

    def encode(self) -> tuple[Header, np.ndarray | None]:
        return {"id": self.id, "path": self.path, "frame": self.frame, "fps": self.fps}, None

    @classmethod
    def decode(cls, header: Header, array: np.ndarray | None) -> FrameTask:
        fps = header.get("fps")
        return cls(int(header["id"]), str(header["path"]), int(header["frame"]), None if fps is None else float(fps))


@dataclass(frozen=True)
class AudioTask:
    """A file's sound for speech transcription (`indexer.audio`), at most `max_seconds`; needs no `Config`. The
    worker answers `Audio` or `Failed`, with `Tick`s while it decodes."""

    id: int
    path: str
    max_seconds: float
    kind: ClassVar[str] = "audio_task"

    def encode(self) -> tuple[Header, np.ndarray | None]:
        return {"id": self.id, "path": self.path, "max_s": self.max_seconds}, None

    @classmethod
    def decode(cls, header: Header, array: np.ndarray | None) -> AudioTask:
        return cls(int(header["id"]), str(header["path"]), float(header["max_s"]))


# -- worker -> pool ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """The worker started and imported its decoders."""

    pid: int
    kind: ClassVar[str] = "ready"

    def encode(self) -> tuple[Header, np.ndarray | None]:
        return {"pid": self.pid}, None

    @classmethod
    def decode(cls, header: Header, array: np.ndarray | None) -> Ready:
        return cls(int(header["pid"]))


@dataclass(frozen=True)
class Tick:
    """Task `id` is still making progress (at most one a second, after a decoded frame)."""

    id: int
    kind: ClassVar[str] = "tick"

    def encode(self) -> tuple[Header, np.ndarray | None]:
        return {"id": self.id}, None

    @classmethod
    def decode(cls, header: Header, array: np.ndarray | None) -> Tick:
        return cls(int(header["id"]))


def plan_to_list(plan: SegmentPlan) -> list[float | None]:
    """A segment plan as it travels in JSON (here and between the Ray stages); the shot is None when shots
    were not detected."""
    return [plan.seq, plan.frame_start, plan.frame_end, plan.start_s, plan.end_s, plan.shot]


def plan_from_list(values: list[Any]) -> SegmentPlan:
    seq, f0, f1, s0, s1, shot = values
    return SegmentPlan(int(seq), int(f0), int(f1), float(s0), float(s1), None if shot is None else int(shot))


@dataclass(frozen=True)
class Segment:
    """One decoded segment of task `id`: its cropped frames ``(T, h, w, 3)`` uint8 and its JPEG thumbnail.

    `attempt` counts decoder switches: segments of an older attempt of the same file are to be dropped.
    """

    id: int
    attempt: int
    plan: SegmentPlan
    crops: np.ndarray
    thumbnail: bytes | None = None
    kind: ClassVar[str] = "segment"

    def encode(self) -> tuple[Header, np.ndarray | None]:
        header: Header = {"id": self.id, "attempt": self.attempt, "plan": plan_to_list(self.plan)}
        if self.thumbnail is not None:
            header["thumb"] = base64.b64encode(self.thumbnail).decode("ascii")
        return header, self.crops

    @classmethod
    def decode(cls, header: Header, array: np.ndarray | None) -> Segment:
        if array is None:
            raise ProtocolError("a segment message without frames")
        plan = plan_from_list(header["plan"])
        return cls(int(header["id"]), int(header["attempt"]), plan, array, _thumbnail_of(header.get("thumb")))


def _thumbnail_of(text: Any) -> bytes | None:
    """A segment's JPEG thumbnail from its base64 text; a damaged one is dropped, not fatal."""
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return None


@dataclass(frozen=True)
class Frame:
    """The JPEG thumbnail a `FrameTask` asked for."""

    id: int
    jpeg: bytes
    kind: ClassVar[str] = "frame"

    def encode(self) -> tuple[Header, np.ndarray | None]:
        return {"id": self.id, "thumb": base64.b64encode(self.jpeg).decode("ascii")}, None

    @classmethod
    def decode(cls, header: Header, array: np.ndarray | None) -> Frame:
        jpeg = _thumbnail_of(header.get("thumb"))
        if jpeg is None:
            raise ProtocolError("a frame message without a readable JPEG")
        return cls(int(header["id"]), jpeg)


@dataclass(frozen=True)
class Audio:
    """The sound an `AudioTask` asked for: 16 kHz mono int16 samples (none when the file has no audio stream)."""

    id: int
    samples: np.ndarray
    has_stream: bool
    truncated: bool = False
    kind: ClassVar[str] = "audio"

    def encode(self) -> tuple[Header, np.ndarray | None]:
        header = {"id": self.id, "has_stream": self.has_stream, "truncated": self.truncated}
        return header, self.samples if self.samples.size else None

    @classmethod
    def decode(cls, header: Header, array: np.ndarray | None) -> Audio:
        samples = np.zeros(0, np.int16) if array is None else array.reshape(-1)
        if samples.dtype != np.int16:
            raise ProtocolError(f"audio samples of type {samples.dtype}")
        return cls(int(header["id"]), samples, bool(header["has_stream"]), bool(header.get("truncated", False)))


@dataclass(frozen=True)
class Done:
    """Task `id` ended well: all its segments were sent before this. `log` holds the first lines decoders
    wrote to stderr during the task, `log_lines` how many there were."""

    id: int
    content_hash: str | None
    probe: Probe | None
    summary: FileSummary | None
    log: list[str] = field(default_factory=list)
    log_lines: int = 0
    kind: ClassVar[str] = "done"

    def encode(self) -> tuple[Header, np.ndarray | None]:
        return {
            "id": self.id,
            "hash": self.content_hash,
            "probe": self.probe.to_dict() if self.probe else None,
            "summary": self.summary.to_dict() if self.summary else None,
            "log": self.log,
            "log_lines": self.log_lines,
        }, None

    @classmethod
    def decode(cls, header: Header, array: np.ndarray | None) -> Done:
        probe, summary = header.get("probe"), header.get("summary")
        return cls(
            int(header["id"]),
            _optional_str(header.get("hash")),
            Probe(**probe) if probe else None,
            FileSummary.from_dict(summary) if summary else None,
            [str(x) for x in header.get("log") or []],
            int(header.get("log_lines", 0)),
        )


@dataclass(frozen=True)
class Failed:
    """Task `id` could not be decoded (`status` failed) or was refused by a limit (`status` skipped); `oom`:
    the worker ran out of memory and exits after this message."""

    id: int
    status: str
    reason: str
    content_hash: str | None = None
    log: list[str] = field(default_factory=list)
    log_lines: int = 0
    oom: bool = False
    kind: ClassVar[str] = "failed"

    def encode(self) -> tuple[Header, np.ndarray | None]:
        return {
            "id": self.id,
            "status": self.status,
            "reason": self.reason,
            "hash": self.content_hash,
            "log": self.log,
            "log_lines": self.log_lines,
            "oom": self.oom,
        }, None

    @classmethod
    def decode(cls, header: Header, array: np.ndarray | None) -> Failed:
        return cls(
            int(header["id"]),
            str(header.get("status", "failed")),
            str(header.get("reason", "unknown error")),
            _optional_str(header.get("hash")),
            [str(x) for x in header.get("log") or []],
            int(header.get("log_lines", 0)),
            bool(header.get("oom", False)),
        )


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


Message = Config | Task | FrameTask | AudioTask | Exit | Ready | Tick | Segment | Frame | Audio | Done | Failed
_KINDS: dict[str, type[Message]] = {
    cls.kind: cls
    for cls in (Config, Task, FrameTask, AudioTask, Exit, Ready, Tick, Segment, Frame, Audio, Done, Failed)
}


def send(fd: int, message: Message) -> None:
    """Write one message to the file descriptor `fd` (blocking until all of it is written)."""
    header, array = message.encode()
    write_message(fd, {"type": message.kind, **header}, array)


def receive(fd: int) -> Message:
    """Read one message; raises `ProtocolError` at end of file or on a malformed or unknown message."""
    header, array = read_message(fd)
    kind = header.get("type")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    try:
        return cls.decode(header, array)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed {kind} message: {exc}") from exc


# -- framing ----------------------------------------------------------------------------------------------


def write_message(fd: int, header: Header, array: np.ndarray | None = None) -> None:
    """Write one framed header (and array) to `fd`."""
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


def read_message(fd: int) -> tuple[Header, np.ndarray | None]:
    """Read one framed header (and array); raises `ProtocolError` at end of file or on a malformed frame."""
    head_len, payload_len = _PREFIX.unpack(_read_exact(fd, _PREFIX.size))
    if head_len > MAX_HEADER:
        raise ProtocolError(f"message header of {head_len} bytes")
    try:
        header = json.loads(_read_exact(fd, head_len))
    except ValueError as exc:
        raise ProtocolError(f"message header is not JSON: {exc}") from exc
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
