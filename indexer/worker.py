"""A decode worker process: ``python -m indexer.worker`` with the protocol on stdin/stdout (see `protocol`).

The pool starts one per core in a fresh interpreter (never forked from the parent, which holds torch threads
and open databases). Here no torch is imported, the address space is capped (RLIMIT_AS), core dumps are off,
and the process dies with its parent (PR_SET_PDEATHSIG). Whatever the decoders print on file descriptor 2
goes to a log file that is cleared per task and counted as that file's warnings; after a crash the pool reads
the same file to say what happened.

Messages out, per task (see `protocol`): a `Segment` per segment, with its cropped frames, and a `Tick` at
most once a second while frames keep coming (progress for the pool's timeout), then `Done` or `Failed`. A
`FrameTask` (the server's on-demand thumbnails, `framejobs`) needs no config and is answered by one `Frame`
(the JPEG of one frame) or `Failed`, an `AudioTask` (speech transcription, `audio`) by `Audio` (the file's
sound, 16 kHz mono) or `Failed`, with `Tick`s while it decodes. A worker that runs out of memory reports the
file and exits, because its heap is in an unknown state; the pool starts a fresh one.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported by `main` once the process is hardened, so a Ctrl-C at start-up cannot kill it
    from .extract import ExtractSpec
    from .protocol import AudioTask, Done, Failed, FrameTask, Segment, Task

_PR_SET_PDEATHSIG = 1
_MAX_LOG_BYTES = 64 << 20


def _lower_limit(kind: int, value: int) -> None:
    """Set a soft resource limit, never above the hard limit we were given."""
    _soft, hard = resource.getrlimit(kind)
    resource.setrlimit(kind, (value if hard == resource.RLIM_INFINITY else min(value, hard), hard))


def _harden(memory_mb: int, nice: int) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # A decoder that logs without end must not fill the disk: writes past 64 MB fail (and are not fatal).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _lower_limit(resource.RLIMIT_FSIZE, _MAX_LOG_BYTES)
    # Ctrl-C reaches the whole process group; the pool stops workers itself, and a worker interrupted midway
    # must not make its file look broken.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if nice > 0:
        os.nice(nice)
    if memory_mb > 0:
        _lower_limit(resource.RLIMIT_AS, memory_mb * 1024 * 1024)
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the death signal was armed
        os._exit(1)
    faulthandler.enable()


class _LogCapture:
    """Counts and keeps the lines decoders write to fd 2 while one task runs."""

    def __init__(self) -> None:
        self._read_fd = os.open(f"/proc/self/fd/{2}", os.O_RDONLY) if os.path.exists("/proc/self/fd/2") else -1

    def reset(self) -> None:
        sys.stderr.flush()
        with contextlib.suppress(OSError):
            os.ftruncate(2, 0)

    def lines(self) -> list[str]:
        sys.stderr.flush()
        if self._read_fd < 0:
            return []
        try:
            data = os.pread(self._read_fd, 1 << 20, 0)
        except OSError:
            return []
        return [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]


def _run_task(out: int, task: Task, spec: ExtractSpec, capture: _LogCapture) -> bool:
    """Handle one task; returns False when the worker should exit afterwards."""
    from .protocol import Failed, Tick, send

    capture.reset()
    last_tick = time.monotonic()

    def tick() -> None:
        # Progress for the pool's timeout: at most one small message a second, after a decoded frame.
        nonlocal last_tick
        now = time.monotonic()
        if now - last_tick >= 1.0:
            last_tick = now
            send(out, Tick(task.id))

    for message in answer(task, spec, on_frame=tick, log=capture.lines):
        send(out, message)
        if isinstance(message, Failed) and message.oom:
            return False
    return True


def answer(
    task: Task, spec: ExtractSpec, *, on_frame: Callable[[], None] | None = None, log: Callable[[], list[str]] = list
) -> Iterator[Segment | Done | Failed]:
    """The messages that answer `task`: its segments, then `Done` or `Failed` with the first lines of `log()`
    (what decoders wrote meanwhile). A worker sends them; the pool without workers reads them directly."""
    from .extract import Decoded, DecodeFailure, decode_file
    from .protocol import Done, Failed, Segment

    for item in decode_file(task.path, spec, probe_only=task.mode == "probe", on_frame=on_frame):
        if isinstance(item, Decoded):
            lines = log()
            yield Done(task.id, item.content_hash, item.probe, item.summary, lines[:5], len(lines))
        elif isinstance(item, DecodeFailure):
            lines = log()
            yield Failed(task.id, item.status, item.reason, item.content_hash, lines[:5], len(lines), item.oom)
        else:
            yield Segment(task.id, item.attempt, item.plan, item.crops, item.thumbnail)


def _run_frame(out: int, task: FrameTask) -> bool:
    """One frame's JPEG for the server (`framejobs`); returns False when the worker should exit afterwards."""
    from xclip_search.errors import VideoError
    from xclip_search.thumbnails import decode_thumbnail

    from .decoders import clean_message
    from .protocol import Failed, Frame, send

    try:
        send(out, Frame(task.id, decode_thumbnail(task.path, task.frame, task.fps)))
    except MemoryError:
        send(out, Failed(task.id, "failed", "out of memory", oom=True))
        return False
    except (VideoError, OSError) as exc:
        send(out, Failed(task.id, "failed", str(exc)))
    except Exception as exc:  # a bug or an unexpected library error costs this frame only
        send(out, Failed(task.id, "failed", f"{type(exc).__name__}: {clean_message(exc)}"))
    return True


def _run_audio(out: int, task: AudioTask) -> bool:
    """A file's sound for speech transcription (`audio`), with `Tick`s while it decodes; returns False when the
    worker should exit afterwards."""
    from xclip_search.errors import VideoError

    from .audio import decode_audio
    from .decoders import clean_message
    from .protocol import Audio, Failed, Tick, send

    last_tick = time.monotonic()

    def tick() -> None:
        nonlocal last_tick
        now = time.monotonic()
        if now - last_tick >= 1.0:
            last_tick = now
            send(out, Tick(task.id))

    try:
        sound = decode_audio(task.path, max_seconds=task.max_seconds, on_chunk=tick)
        send(out, Audio(task.id, sound.samples, sound.has_stream, sound.truncated))
    except MemoryError:
        send(out, Failed(task.id, "failed", "out of memory", oom=True))
        return False
    except (VideoError, OSError) as exc:
        send(out, Failed(task.id, "failed", str(exc)))
    except Exception as exc:  # a bug or an unexpected library error costs this file's sound only
        send(out, Failed(task.id, "failed", f"{type(exc).__name__}: {clean_message(exc)}"))
    return True


def main() -> int:
    memory_mb = int(os.environ.get("XCLIP_SEARCH_WORKER_MEMORY_MB", "0"))
    _harden(memory_mb, int(os.environ.get("XCLIP_SEARCH_WORKER_NICE", "0")))
    # The protocol owns the original stdout; anything else printing to fd 1 lands in the log instead.
    out = os.dup(1)
    os.dup2(2, 1)
    inp = 0
    # Import the decoders now, so the first task does not pay for it and a broken install shows at start.
    import av
    import av.logging

    from . import decoders  # noqa: F401  (imports decord where available)
    from .protocol import AudioTask, Config, Exit, Failed, FrameTask, ProtocolError, Ready, Task, receive, send

    av.logging.set_level(av.logging.WARNING)  # FFmpeg's warnings reach fd 2 through Python's last-resort handler
    capture = _LogCapture()
    send(out, Ready(os.getpid()))
    spec: ExtractSpec | None = None
    while True:
        try:
            msg = receive(inp)
        except ProtocolError:
            return 0  # the pool closed our stdin (or broke the protocol): done
        if isinstance(msg, Config):
            spec = msg.spec
        elif isinstance(msg, Task):
            if spec is None:
                send(out, Failed(msg.id, "failed", "no config"))
            elif not _run_task(out, msg, spec, capture):
                return 0
        elif isinstance(msg, FrameTask):
            if not _run_frame(out, msg):
                return 0
        elif isinstance(msg, AudioTask):
            if not _run_audio(out, msg):
                return 0
        elif isinstance(msg, Exit):
            return 0


if __name__ == "__main__":
    sys.exit(main())
