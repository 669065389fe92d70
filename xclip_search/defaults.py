"""Defaults shared by the library and the command line (kept import-light: no torch, no SQL)."""

from __future__ import annotations

import os
from pathlib import Path

INDEX_ENV = "XCLIP_SEARCH_INDEX"
DEFAULT_INDEX_DIR = "xclip-index"


def default_index_dir() -> Path:
    """``$XCLIP_SEARCH_INDEX``, else ``./xclip-index``."""
    return Path(os.environ.get(INDEX_ENV) or DEFAULT_INDEX_DIR)
