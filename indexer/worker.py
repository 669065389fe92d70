"""A decode worker process: ``python -m indexer.worker`` with the protocol on stdin/stdout (see `protocol`).

The pool starts one per core in a fresh interpreter (never forked from the parent, which holds torch threads
and open databases). Here no torch is imported, the address space is capped (RLIMIT_AS), core dumps are off,
and the process dies with its parent (PR_SET_PDEATHSIG). Whatever the decoders print on file descriptor 2
goes to a log file that is cleared per task and counted as that file's warnings; after a crash the pool reads
the same file to say what happened.

Messages out, per task: ``segment`` (one per segment, with its cropped frames) and ``tick`` (at most once a
second while frames keep coming: progress for the pool's timeout), then ``done`` or ``failed`` (``status``
failed or skipped). A ``thumbnail`` task (the server's on-demand thumbnails, `framejobs`) needs no config and
answers ``done`` with the JPEG of one frame (``thumb``, base64) or ``failed``. A worker that runs out of
memory reports the file and exits, because its heap is in an unknown state; the pool starts a fresh one.
"""

from __future__ import annotations

import base64
import contextlib
import faulthandler
import os
import resource
import signal
import sys
import time
from typing import Any

from .protocol import ProtocolError, read_message, write_message

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


def _run_task(out: int, task: dict[str, Any], spec: Any, capture: _LogCapture) -> bool:
    """Handle one task; returns False when the worker should exit afterwards."""
    from xclip_search.errors import VideoError, VideoLimitError

    from .decoders import clean_message
    from .extract import Extraction
    from .fingerprint import content_hash

    tid = task["id"]
    path = str(task["path"])
    capture.reset()
    digest: str | None = None
    keep_going = True

    def finish(kind: str, **fields: Any) -> None:
        logs = capture.lines()
        write_message(out, {"type": kind, "id": tid, "hash": digest, "log": logs[:5], "log_lines": len(logs), **fields})

    last_tick = time.monotonic()

    def tick() -> None:
        # Progress for the pool's timeout: at most one small message a second, after a decoded frame.
        nonlocal last_tick
        now = time.monotonic()
        if now - last_tick >= 1.0:
            last_tick = now
            write_message(out, {"type": "tick", "id": tid})

    try:
        digest = content_hash(path)
        job = Extraction(path, spec, on_frame=tick)
        if task.get("mode") == "probe":
            finish("done", probe=job.probe.to_dict(), summary=None)
            return True
        for seg in job.segments():
            plan = seg.plan
            header = {
                "type": "segment",
                "id": tid,
                "attempt": seg.attempt,
                "plan": [plan.seq, plan.frame_start, plan.frame_end, plan.start_s, plan.end_s, plan.shot],
            }
            if seg.thumbnail is not None:
                header["thumb"] = base64.b64encode(seg.thumbnail).decode("ascii")
            write_message(out, header, seg.crops)
        assert job.summary is not None
        finish("done", probe=job.probe.to_dict(), summary=job.summary.to_dict())
    except VideoLimitError as exc:
        finish("failed", status="skipped", reason=str(exc))
    except VideoError as exc:
        finish("failed", status="failed", reason=str(exc))
    except MemoryError:
        finish("failed", status="failed", reason="out of memory", oom=True)
        keep_going = False
    except OSError as exc:
        finish("failed", status="failed", reason=f"cannot read the file: {exc.strerror or exc}")
    except Exception as exc:  # a bug or an unexpected library error costs this file only
        finish("failed", status="failed", reason=f"{type(exc).__name__}: {clean_message(exc)}")
    return keep_going


def _run_thumbnail(out: int, task: dict[str, Any]) -> bool:
    """One frame's JPEG for the server (`framejobs`); returns False when the worker should exit afterwards."""
    from xclip_search.errors import VideoError
    from xclip_search.thumbnails import decode_thumbnail

    from .decoders import clean_message

    tid = task["id"]
    fps = task.get("fps")
    try:
        data = decode_thumbnail(str(task["path"]), int(task["frame"]), float(fps) if fps else None)
        write_message(out, {"type": "done", "id": tid, "thumb": base64.b64encode(data).decode("ascii")})
    except MemoryError:
        write_message(out, {"type": "failed", "id": tid, "status": "failed", "reason": "out of memory", "oom": True})
        return False
    except (VideoError, OSError) as exc:
        write_message(out, {"type": "failed", "id": tid, "status": "failed", "reason": str(exc)})
    except Exception as exc:  # a bug or an unexpected library error costs this frame only
        reason = f"{type(exc).__name__}: {clean_message(exc)}"
        write_message(out, {"type": "failed", "id": tid, "status": "failed", "reason": reason})
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
    from .extract import ExtractSpec

    av.logging.set_level(av.logging.WARNING)  # FFmpeg's warnings reach fd 2 through Python's last-resort handler
    capture = _LogCapture()
    write_message(out, {"type": "ready", "pid": os.getpid()})
    spec: ExtractSpec | None = None
    while True:
        try:
            msg, _ = read_message(inp)
        except ProtocolError:
            return 0  # the pool closed our stdin: done
        kind = msg.get("type")
        if kind == "config":
            spec = ExtractSpec.from_dict(msg["spec"])
        elif kind == "task" and msg.get("mode") == "thumbnail":
            if not _run_thumbnail(out, msg):
                return 0
        elif kind == "task":
            if spec is None:
                write_message(out, {"type": "failed", "id": msg["id"], "status": "failed", "reason": "no config"})
                continue
            if not _run_task(out, msg, spec, capture):
                return 0
        elif kind == "exit":
            return 0


if __name__ == "__main__":
    sys.exit(main())
