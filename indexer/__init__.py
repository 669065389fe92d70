"""Ingest: walk folders, probe and decode videos in worker processes, plan segments, run the indexing pipeline.

    from indexer import IndexOptions, run_index
    report = run_index(["~/Videos"], "xclip-index", model="microsoft/xclip-base-patch32")
    print(report.to_dict())

Modules that decode (walk, probe, decoders, segments, extract) import no torch; the pipeline does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pipeline import FileOutcome, IndexOptions, IndexReport, run_index

_LAZY = {"run_index", "IndexOptions", "IndexReport", "FileOutcome"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'indexer' has no attribute {name!r}")


__all__ = ["FileOutcome", "IndexOptions", "IndexReport", "run_index"]
