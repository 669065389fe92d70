"""Ingest: walk folders, probe and decode videos in worker processes, plan segments, run the indexing pipeline.

    from indexer import IndexOptions, run_index
    report = run_index(["~/Videos"], "xclip-index", model="microsoft/xclip-base-patch32")
    print(report.to_dict())

Roles: walk (find files) -> changes + fingerprint (what a run must do) -> pool + worker + protocol (isolated
decoding: probe, decoders, extract, segments) -> ingest (batched encoding, commits) -> pipeline (the run);
dryrun estimates a run, tuning and modelspec choose resources. Only ingest imports torch, and only when
something needs encoding; decode workers never do.
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
