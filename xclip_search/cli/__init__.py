"""The ``xclip-search`` command line: a thin shell over `xclip_search.Index` and `indexer.run_index`.

Each command parses its flags, calls one library function, and prints either a table (stdout; progress on
stderr) or, with ``--json``, exactly the JSON of DESIGN.md §4. Library errors become ``Error: ...`` plus a hint
on stderr and exit code 1; an indexing or tagging run in which some files failed exits with 3. One module per
group of commands; importing them registers the commands on `cli`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from . import admin, concepts, demo, evaluate, indexing, integrity, searching, serving, tagging, watching
from .base import EXIT_PARTIAL, EXIT_USER_ERROR, cli

__all__ = [
    "EXIT_PARTIAL",
    "EXIT_USER_ERROR",
    "admin",
    "cli",
    "concepts",
    "demo",
    "evaluate",
    "indexing",
    "integrity",
    "main",
    "searching",
    "serving",
    "tagging",
    "watching",
]


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cli.main(args=list(argv) if argv is not None else None, prog_name="xclip-search")
