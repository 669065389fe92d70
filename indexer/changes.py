"""What a run has to do: compare what the walk found with the catalog, file by file, without decoding.

Per found file, in order of cost:

- same path, same ``(size, mtime_ns)`` and inode: **unchanged** (a failed or skipped file too, unless
  ``--retry-failed``: it is also listed in `RunPlan.earlier`, so the run's report and exit code still say that
  it is not indexed);
- same path, same size, other stamps, same content hash: **unchanged**, and its stamps are refreshed so the
  next run need not hash it again;
- a new path whose inode, size and mtime equal those of an indexed file that is gone: **moved** (a rename);
  otherwise whose content hash equals that of a gone file of the same size: **moved** (a copy to another
  filesystem and a delete). Either way the row takes the new path and keeps its vectors;
- anything else: **to index** (new or changed).

With ``--prune``, indexed files under the walked roots that are gone (and were not moved) are retired.
The content hash is only computed where stat fields leave the question open (see `fingerprint`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from xclip_search.store.catalog import FAILED, INDEXED, REMOVED, SKIPPED, FileUpdate, signed64

from .fingerprint import content_hash
from .walk import FoundFile, WalkIssue


@dataclass(frozen=True)
class EarlierFailure:
    """A found file whose last attempt, in an earlier run, failed or was skipped, unchanged since (not retried)."""

    path: str
    status: str  # failed or skipped
    reason: str | None


@dataclass
class RunPlan:
    """The classification of one run's files; every found path is in exactly one list."""

    unchanged: list[FoundFile] = field(default_factory=list)
    refreshed: list[FileUpdate] = field(default_factory=list)  # unchanged content, new stamps
    moved: list[FileUpdate] = field(default_factory=list)
    todo: list[FoundFile] = field(default_factory=list)
    issues: list[WalkIssue] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    earlier: list[EarlierFailure] = field(default_factory=list)  # the unchanged files still failed or skipped

    @property
    def found_videos(self) -> int:
        """Video files the walk found (whatever they need); 0 when the roots hold none."""
        return len(self.unchanged) + len(self.moved) + len(self.todo)


def _hash_or_none(path: str) -> str | None:
    try:
        return content_hash(path)
    except OSError:
        return None


def _update(old_path: str, f: FoundFile, digest: str | None) -> FileUpdate:
    return FileUpdate(old_path, f.path, f.size, f.mtime_ns, f.dev, f.inode, digest)


def classify(
    found: Iterable[FoundFile | WalkIssue],
    rows: dict[str, dict[str, Any]],
    *,
    roots: Sequence[str],
    retry_failed: bool = False,
    prune: bool = False,
) -> RunPlan:
    """Classify `found` against the catalog `rows` (all video rows, by path)."""
    plan = RunPlan()
    files: list[FoundFile] = []
    for item in found:
        if isinstance(item, WalkIssue):
            plan.issues.append(item)
        else:
            files.append(item)
    seen = {f.path for f in files} | {i.path for i in plan.issues}
    gone = _GoneFiles(rows, seen)
    for f in files:
        row = rows.get(f.path)
        if row is not None and row["status"] != REMOVED:
            _classify_known(plan, f, row, retry_failed)
            continue
        old = gone.match(f)
        if old is not None:
            plan.moved.append(_update(old[0], f, old[1]))
        else:
            plan.todo.append(f)
    if prune:
        moved_from = {u.old_path for u in plan.moved}
        prefixes = [os.path.abspath(r) for r in roots]
        for path, row in rows.items():
            if row["status"] == REMOVED or path in seen or path in moved_from:
                continue
            inside = any(path == p or path.startswith(p.rstrip(os.sep) + os.sep) for p in prefixes)
            if inside and not os.path.lexists(path):
                plan.removed.append(path)
    return plan


def _classify_known(plan: RunPlan, f: FoundFile, row: dict[str, Any], retry_failed: bool) -> None:
    same_inode = row.get("inode") is None or (row.get("dev"), row.get("inode")) == (signed64(f.dev), signed64(f.inode))
    same_stamps = row["size"] == f.size and row["mtime_ns"] == f.mtime_ns and same_inode
    status = row["status"]
    if status in (FAILED, SKIPPED):
        if same_stamps and not retry_failed:
            plan.unchanged.append(f)
            plan.earlier.append(EarlierFailure(f.path, status, row.get("reason")))
        else:
            plan.todo.append(f)
        return
    if same_stamps:
        plan.unchanged.append(f)
        if row.get("inode") is None:  # a row from before inodes were recorded: record it now
            plan.refreshed.append(_update(f.path, f, row.get("content_hash")))
        return
    if row["size"] == f.size and row.get("content_hash"):
        digest = _hash_or_none(f.path)
        if digest == row["content_hash"]:
            plan.unchanged.append(f)
            plan.refreshed.append(_update(f.path, f, digest))
            return
    plan.todo.append(f)


class _GoneFiles:
    """Indexed catalog rows whose files no longer exist: the candidates a new path may have moved from."""

    def __init__(self, rows: dict[str, dict[str, Any]], seen: set[str]) -> None:
        self._rows = rows
        self._seen = seen
        self._ready = False
        self._by_inode: dict[tuple[Any, Any], dict[str, Any]] = {}
        self._by_size: dict[int, list[dict[str, Any]]] = {}
        self._taken: set[str] = set()

    def _load(self) -> None:
        self._ready = True
        for path, row in self._rows.items():
            if row["status"] != INDEXED or path in self._seen or os.path.lexists(path):
                continue
            if row.get("inode") is not None:
                self._by_inode[(row.get("dev"), row["inode"])] = row
            if row.get("content_hash"):
                self._by_size.setdefault(int(row["size"]), []).append(row)

    def match(self, f: FoundFile) -> tuple[str, str | None] | None:
        """``(old path, content hash)`` of the gone file `f` is, or None."""
        if not self._rows:
            return None
        if not self._ready:
            self._load()
        row = self._by_inode.get((signed64(f.dev), signed64(f.inode)))
        if (
            row is not None
            and row["path"] not in self._taken
            and (row["size"], row["mtime_ns"]) == (f.size, f.mtime_ns)
        ):
            self._taken.add(row["path"])
            return row["path"], row.get("content_hash")
        candidates = [r for r in self._by_size.get(f.size, []) if r["path"] not in self._taken]
        if not candidates:
            return None
        digest = _hash_or_none(f.path)
        for r in candidates:
            if digest is not None and r["content_hash"] == digest:
                self._taken.add(r["path"])
                return r["path"], digest
        return None
