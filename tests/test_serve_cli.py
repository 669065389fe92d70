"""``xclip-search serve`` as a user runs it: a real process that prints its URL and answers, and one-line errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from click.testing import CliRunner

from xclip_search.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def test_serve_command_starts_and_answers(serve_index: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XCLIP_SEARCH_TOKEN": "from-env"}
    cmd = [sys.executable, "-m", "xclip_search", "serve", "--index", str(serve_index), "--port", "0", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        started = json.loads(proc.stdout.readline())
        assert started["url"].startswith("http://127.0.0.1:") and started["token"] is True
        assert started["index"] == str(serve_index.resolve())
        health = httpx.get(started["url"] + "api/health", timeout=60)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        page = httpx.get(started["url"], timeout=60)
        assert page.status_code == 200 and "<title>xclip-search</title>" in page.text
        refused = httpx.post(started["url"] + "api/index/update", timeout=60)
        assert refused.status_code == 401  # the token came from $XCLIP_SEARCH_TOKEN
    finally:
        proc.terminate()
        proc.wait(30)


def test_serve_errors_are_one_line(tmp_path: Path, serve_index: Path) -> None:
    missing = CliRunner().invoke(cli, ["serve", "--index", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: No index at")
    assert "Traceback" not in missing.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        taken = CliRunner().invoke(cli, ["serve", "--index", str(serve_index), "--port", str(port)])
    assert taken.exit_code == 1 and taken.stderr.startswith(f"Error: Cannot listen on 127.0.0.1:{port}")
    assert "--port" in taken.stderr.splitlines()[1]
