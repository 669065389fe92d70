"""A test-only decoder that misbehaves on purpose, chosen by the file name, to prove worker isolation.

Name a file ``*hang*``, ``*segv*``, ``*abort*``, ``*oom*`` or ``*exit*`` and opening it hangs forever, segfaults,
aborts, allocates memory without bound, or exits the process; ``*slowseg*`` (0.05 s) and ``*crawl*`` (0.6 s)
sleep before each frame but make progress. Any other file is decoded by decord. Workers load it as
``tests.faulty_decoder:FAULTY``.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Iterator, Sequence

import numpy as np

from indexer.decoders import DECODERS, OpenVideo


class _Slow:
    def __init__(self, inner: OpenVideo, delay: float) -> None:
        self._inner = inner
        self.info = inner.info
        self.warnings = 0
        self._delay = delay

    def iter_frames(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        for frame in self._inner.iter_frames(indices):
            time.sleep(self._delay)
            yield frame

    def close(self) -> None:
        self._inner.close()


class FaultyDecoder:
    name = "faulty"

    def open(self, path: str) -> OpenVideo:
        name = os.path.basename(path)
        if "hang" in name:
            while True:
                time.sleep(3600)
        if "segv" in name:
            ctypes.string_at(0)
        if "abort" in name:
            os.abort()
        if "exit" in name:
            os._exit(7)
        if "oom" in name:
            hoard = []
            while True:
                hoard.append(np.ones(64 * 1024 * 1024, dtype=np.uint8))  # touched, so really allocated
        if "slowseg" in name:
            return _Slow(DECODERS["decord"].open(path), 0.05)
        if "crawl" in name:
            return _Slow(DECODERS["decord"].open(path), 0.6)
        return DECODERS["decord"].open(path)


FAULTY = FaultyDecoder()
