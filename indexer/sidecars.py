"""Keeping each video's sidecar subtitles in the catalog current, without touching its frames.

A run hands every video it saw (indexed, unchanged or moved) to `sync_sidecars` once its frames are committed.
What a video's sidecar cues were made from is recorded with them (`subtitles.sidecar_stamp`: each file's name,
size and mtime), so a re-run over an unchanged library costs a directory listing per folder and no parse;
a sidecar added or changed re-reads that video's sidecars (its vectors stay as they are); one removed drops its
cues. A sidecar that cannot be parsed costs its own cues only and is named in the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from xclip_search.store.catalog import INDEXED, Catalog
from xclip_search.store.cues import Cue

from .subtitles import SidecarFinder, read_sidecar, sidecar_stamp


@dataclass
class SidecarReport:
    """What `sync_sidecars` did: videos whose sidecars were read (again) or dropped, cues written, and the
    sidecar files that could not be parsed (path, reason)."""

    read: int = 0
    dropped: int = 0
    cues: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, int]:
        return {"read": self.read, "dropped": self.dropped, "cues": self.cues, "failed": len(self.failures)}


def sync_sidecars(catalog: Catalog, video_paths: Sequence[str]) -> SidecarReport:
    """Bring the sidecar cues of the indexed videos among `video_paths` in line with the files beside them."""
    report = SidecarReport()
    if not video_paths:
        return report
    rows = catalog.videos_by_path(list(video_paths))
    stored = catalog.cue_stamps("sidecar")
    finder = SidecarFinder()
    for path in sorted(rows):
        row = rows[path]
        if row["status"] != INDEXED:
            continue
        video_id = int(row["id"])
        found = finder.find(path)
        if not found:
            if video_id in stored:
                catalog.replace_cues(video_id, "sidecar", [], None)
                report.dropped += 1
            continue
        stamp = sidecar_stamp(found)
        if stored.get(video_id) == stamp:
            continue
        cues: list[Cue] = []
        for sidecar in found:
            try:
                cues.extend(read_sidecar(sidecar))
            except Exception as exc:  # a malformed file costs its own cues; its stamp stops a re-try until it changes
                report.failures.append((sidecar.path, _reason(exc)))
        cues.sort(key=lambda c: (c.start, c.end))
        report.cues += catalog.replace_cues(video_id, "sidecar", cues, stamp)
        report.read += 1
    return report


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, OSError):
        text = exc.strerror or text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["SidecarReport", "sync_sidecars"]
