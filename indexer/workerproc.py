"""A decode worker process as the pool sees it: start it, talk to it, kill it, and say why it died.

The worker runs `indexer.worker` in a fresh interpreter (never a fork of this process, which holds torch
threads and open databases), with its stderr in a log file the pool reads after a crash.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .protocol import Exit, Message, ProtocolError, Task, send

START_TIMEOUT_S = 60.0


def worker_env(memory_mb: int, nice: int) -> dict[str, str]:
    """The environment of a worker: this interpreter's import path, its limits, one thread per math library."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["XCLIP_SEARCH_WORKER_MEMORY_MB"] = str(memory_mb)
    env["XCLIP_SEARCH_WORKER_NICE"] = str(nice)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    env["MALLOC_ARENA_MAX"] = "2"
    for var in ("XCLIP_SEARCH_CRASH_AT", "XCLIP_SEARCH_PAUSE_AT"):  # crash points are for the writer process
        env.pop(var, None)
    return env


class WorkerProcess:
    """One running worker: its pipes, the task it holds, when it must next be heard from, and its log."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        fd, name = tempfile.mkstemp(prefix="worker-", suffix=".log", dir=log_dir)
        os.close(fd)
        self.log_path = Path(name)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "indexer.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                bufsize=0,
                env=env,
                close_fds=True,
            )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.rfd = self.proc.stdout.fileno()
        self.wfd = self.proc.stdin.fileno()
        self.ready = False
        self.task: Task | None = None
        self.deadline = time.monotonic() + START_TIMEOUT_S
        self.tasks_done = 0

    def send(self, message: Message) -> None:
        send(self.wfd, message)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.reap()

    def reap(self) -> int | None:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        return code

    def log_tail(self) -> str:
        try:
            lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return ""
        faulthandler_lines = (
            "Fatal Python error",
            "Current thread",
            "Thread 0x",
            "File ",
            "Extension modules",
            "(total",
        )
        useful = [line for line in lines if not line.startswith(faulthandler_lines)]
        return useful[-1][:200] if useful else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ProtocolError):
                self.send(Exit())
            with contextlib.suppress(OSError):
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.kill()
        self.reap()
        self.log_path.unlink(missing_ok=True)


def death_reason(code: int | None, tail: str) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        what = {
            "SIGKILL": "was killed (SIGKILL; out of memory?)",
            "SIGSEGV": "crashed (SIGSEGV)",
            "SIGABRT": "aborted (SIGABRT)",
            "SIGBUS": "crashed (SIGBUS)",
        }.get(name, f"died ({name})")
    else:
        what = f"exited with status {code}"
    text = f"the decoder process {what} on this file"
    return f"{text}; last message: {tail}" if tail else text
