"""Ingest: walk folders, probe and decode videos in worker processes, plan segments, run the indexing pipeline.

    from indexer import IndexOptions, run_index
    report = run_index(["~/Videos"], "xclip-index", model="microsoft/xclip-base-patch32")
    print(report.to_dict())

Roles: walk (find files) -> changes + fingerprint (what a run must do) -> pool + worker + protocol (isolated
decoding: probe, decoders, extract, segments) -> ingest (batched encoding, commits) or distributed +
raystages (the same on a Ray cluster), both writing `records` -> pipeline (the run, whichever way it encodes),
then transcribe (``--transcribe``: audio decoded in the same workers by framejobs, Whisper in this process);
dryrun estimates a run, tuning and modelspec choose resources. Only ingest and the Ray embedding stage import
torch, and only when something needs encoding; decode workers never do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pipeline import IndexOptions, IndexReport, run_index
    from .records import FileOutcome

_LAZY = {"run_index", "IndexOptions", "IndexReport"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import pipeline

        return getattr(pipeline, name)
    if name == "FileOutcome":
        from .records import FileOutcome

        return FileOutcome
    raise AttributeError(f"module 'indexer' has no attribute {name!r}")


__all__ = ["FileOutcome", "IndexOptions", "IndexReport", "run_index"]
