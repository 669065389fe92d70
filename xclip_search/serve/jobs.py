"""Re-indexing from the server: ``xclip-search index`` over the recorded roots, in a child process.

A child process keeps decoding and model batches out of the server (a crash or a memory bomb in one video
cannot take the server down) and is the same code path as the command line; the server just reads the new
generations as they are published. One job at a time; the paths are the roots earlier runs recorded, never
anything from the request.

A recorded folder that holds no video any more is a normal outcome, as it is for the watcher: the job passes
``--allow-empty`` (`IndexOptions.allow_empty`), so it finishes with a report of what it found instead of
failing with "no video found" (the command line's guard against a mistyped path, which a recorded root is not).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import IndexBusyError, InvalidArgumentError

_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


class ReindexJob:
    """The latest re-index job of a server (thread-safe)."""

    def __init__(self, index_dir: Path, device: str | None = None) -> None:
        self.index_dir = index_dir
        self.device = device
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._state: dict[str, Any] = {"state": "idle"}
        self._waiter: threading.Thread | None = None

    def start(self, roots: Sequence[str]) -> dict[str, Any]:
        existing = [r for r in roots if os.path.exists(r)]
        if not existing:
            raise InvalidArgumentError(
                "No recorded folder to re-index exists any more",
                hint="Run 'xclip-search index PATH --index DIR' from the command line.",
            )
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                raise IndexBusyError("A re-index job is already running", hint="Poll GET /api/index/update.")
            cmd = [sys.executable, "-m", "xclip_search", "index", *existing, "--index", str(self.index_dir)]
            cmd += ["--allow-empty", "--json"]
            if self.device:
                cmd += ["--device", self.device]
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
            self._proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env
            )
            self._state = {"state": "running", "roots": existing, "started_at": now_iso(), "pid": self._proc.pid}
            self._waiter = threading.Thread(target=self._wait, args=(self._proc,), daemon=True)
            self._waiter.start()
            return dict(self._state)

    def _wait(self, proc: subprocess.Popen[str]) -> None:
        out, err = proc.communicate()
        report: Any = None
        try:
            report = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
        except ValueError:
            report = None
        with self._lock:
            if self._proc is proc:
                self._state = {
                    **self._state,
                    "state": "finished" if proc.returncode in (0, 3) else "failed",
                    "exit_code": proc.returncode,
                    "finished_at": now_iso(),
                    "report": report,
                    "stderr_tail": "\n".join(err.strip().splitlines()[-5:]),
                }

    def status(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._state)

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """The status once the latest job has ended and its outcome is recorded (or at `timeout`): for callers
        that must not poll, such as tests."""
        with self._lock:
            waiter = self._waiter
        if waiter is not None:
            waiter.join(timeout)
        return self.status()

    def stop(self) -> None:
        """Terminate a running job (server shutdown); committed generations stay published."""
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
