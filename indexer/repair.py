"""``xclip-search verify --repair``: bring a damaged index back to what an undamaged one would answer.

`store.integrity.verify_index` finds what is wrong; this module, which can embed videos, fixes it:

- a garbage ``manifest.json`` is rebuilt from the catalog's last generation (any writer does that on open);
- the videos of each damaged or missing shard are embedded again from their files, by an ``index`` run over
  exactly those files with the segment windows the index recorded, after which the shard holds no live
  segment and is dropped; videos whose files are gone are retired (as ``--prune`` would);
- the ANN is rebuilt when it is damaged or held ids of a dropped shard;
- shards written before row hashes existed get their row-hash file (after their sha256s check out).

A damaged catalog is not repaired here: it is the index's record of what exists (see the hint it raises).
"""

from __future__ import annotations

import os
from pathlib import Path

from xclip_search.errors import CatalogCorruptError
from xclip_search.store.integrity import (
    IntegrityReport,
    clear_recorded,
    existing,
    record_damage,
    recorded_model,
    verify_index,
)
from xclip_search.store.writer import IndexWriter

from .pipeline import IndexOptions, Progress, run_index


def repair_index(
    index_dir: str | os.PathLike[str], *, device: str | None = None, progress: Progress | None = None
) -> IntegrityReport:
    """Verify the index and repair what can be repaired; returns the verification after the repair."""
    target = Path(index_dir).expanduser().resolve()
    before = verify_index(target)
    if before.ok and all(s.row_hashes for s in before.shards):
        return before
    if not before.catalog.ok:
        raise CatalogCorruptError(
            f"The catalog {before.catalog.file} is damaged: {before.catalog.problem}",
            hint="Restore it from a backup, or move the index directory aside and rebuild it with "
            "'xclip-search index' over the same folders.",
        )
    identity = recorded_model(target)
    damaged = [s.name for s in before.damaged_shards]
    paths = sorted({p for s in before.damaged_shards for p in s.videos})
    here, gone = existing(paths)
    repaired: list[str] = []
    with IndexWriter(target, identity) as writer:  # rebuilds a garbage manifest from the catalog on open
        if not before.manifest.ok:
            repaired.append(f"manifest.json rebuilt from the catalog (generation {writer.manifest.generation})")
        record_damage(writer.catalog, damaged)
        writer.damaged |= set(damaged)
        if gone:
            writer.remove(gone)
            writer.flush()
            repaired.append(f"retired {len(gone)} video(s) whose files are gone: {', '.join(gone)}")
    if here:
        # No segmentation options: the run cuts the videos with the index's recorded segmentation.
        run_index(here, target, options=IndexOptions(device=device), progress=progress)
        repaired.append(f"re-embedded {len(here)} video(s) of damaged shard(s) {', '.join(damaged)}")
    with IndexWriter(target, identity) as writer:
        writer.damaged |= set(damaged)
        dropped = writer.drop_dead_shards()
        upgraded = writer.add_row_hashes()
        if upgraded:
            repaired.append(f"row hashes added to {len(upgraded)} shard(s) written before they existed")
        ann_bad = before.ann is not None and not before.ann.ok
        if writer.manifest.shards and (ann_bad or writer.manifest.ann is None or dropped):
            writer.publish_ann(force=True)
            repaired.append("ANN index rebuilt from the verified shards")
        clear_recorded(writer.catalog, [s.name for s in writer.manifest.shards])
    after = verify_index(target)
    after.repaired = repaired
    return after
