"""Human output for the command line: tables, times, progress bars (stderr), and JSON (stdout)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO


def format_time(seconds: float) -> str:
    """``83.4`` -> ``1:23.4``; hours when needed."""
    seconds = max(0.0, float(seconds))
    minutes, sec = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{sec:04.1f}" if hours else f"{minutes}:{sec:04.1f}"


def format_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], *, out: TextIO | None = None) -> None:
    """A plain aligned table; the last column is left unpadded (usually a path)."""
    stream = out or sys.stdout
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        line = "  ".join(c.ljust(widths[i]) if i < len(row) - 1 else c for i, c in enumerate(row))
        stream.write(line.rstrip() + "\n")
        if n == 0:
            stream.write("  ".join("-" * w for w in widths) + "\n")


def echo_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")


class BarProgress:
    """Indexing progress on stderr: files done, segments encoded, throughput and ETA (tqdm).

    The bar appears with the first encoded segment, so an error while the model loads stays one clean line.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._total = 0
        self._segments = 0
        self._t0 = time.monotonic()

    def start(self, total_files: int) -> None:
        self._t0 = time.monotonic()
        self._total = total_files

    def _ensure_bar(self) -> Any:
        if self._bar is None and self.enabled and self._total:
            from tqdm import tqdm

            self._bar = tqdm(total=self._total, unit="file", file=sys.stderr, dynamic_ncols=True, desc="Indexing")
        return self._bar

    def file_done(self, outcome: Any) -> None:
        bar = self._ensure_bar()
        if bar is not None:
            bar.update(1)

    def segments_encoded(self, count: int) -> None:
        self._segments += count
        bar = self._ensure_bar()
        if bar is not None:
            rate = self._segments / max(1e-9, time.monotonic() - self._t0)
            bar.set_postfix(segments=self._segments, seg_per_s=f"{rate:.1f}", refresh=False)

    def speech_start(self, total_files: int) -> None:
        """Transcription follows indexing (``index --transcribe``): a bar of its own, in files."""
        self.close()
        if self.enabled and total_files:
            from tqdm import tqdm

            self._bar = tqdm(total=total_files, unit="file", file=sys.stderr, dynamic_ncols=True, desc="Transcribing")

    def speech_done(self, outcome: Any) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
