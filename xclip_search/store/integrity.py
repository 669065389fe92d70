"""Finding damaged index files and steering their repair.

Searches never return a score computed from damaged bytes: `vectors.VectorView` checks each row it reads and
reports a failing shard with the videos it holds. This module is the rest of the story:

- `verify_index` (``xclip-search verify``) reads every stored file whole: the manifest's own checksum, the
  catalog (SQLite's ``PRAGMA integrity_check``), each shard file against the manifest's sha256, the ANN file;
- `prepare_reembedding` is the indexer's hook: at the start of an ``index`` run it finds the shards that are
  missing files or have the wrong shape (cheap: a stat and a header read each), plus those a ``verify
  --repair`` recorded as damaged, and makes their videos look changed so the run re-embeds exactly those files
  from the videos; the writer then drops the shards (`IndexWriter.drop_dead_shards`) and rebuilds the ANN.

A plain ``index`` run does not read every shard whole (a run over an unchanged library stays a fraction of a
second); bit-level damage is found by a search touching it, by the ANN rebuild (which verifies the shards it
reads) or by ``verify``, and ``verify --repair`` records it for the re-embedding run it starts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..errors import CatalogError, IndexCorruptError, ManifestCorruptError, ShardCorruptError
from ..identity import ModelIdentity
from . import ann as ann_store
from .catalog import CATALOG_NAME, Catalog
from .fsio import sha256_file
from .manifest import Manifest, ShardInfo, read_manifest
from .vectors import ROWHASH, VectorStore

DAMAGED_KEY = "damaged_shards"  # catalog meta: shards a verify found damaged, re-embedded by the next run


@dataclass(frozen=True)
class ShardStatus:
    """One vector shard as verified: the files that fail their sha256 (or are missing), and its videos."""

    name: str
    generation: int
    count: int
    damaged_files: tuple[str, ...] = ()
    videos: tuple[str, ...] = ()
    row_hashes: bool = True

    @property
    def ok(self) -> bool:
        return not self.damaged_files

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "generation": self.generation,
            "segments": self.count,
            "ok": self.ok,
            "damaged_files": list(self.damaged_files),
            "videos": list(self.videos),
            "row_hashes": self.row_hashes,
        }


@dataclass(frozen=True)
class FileStatus:
    """A single stored file (manifest, catalog, ANN): whether it checks out, and what is wrong if not."""

    file: str
    ok: bool
    problem: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"file": self.file, "ok": self.ok, "problem": self.problem}


@dataclass
class IntegrityReport:
    """What ``xclip-search verify`` found (and, with ``--repair``, what it repaired)."""

    index: str
    manifest: FileStatus
    catalog: FileStatus
    ann: FileStatus | None
    shards: list[ShardStatus] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def damaged_shards(self) -> list[ShardStatus]:
        return [s for s in self.shards if not s.ok]

    @property
    def ok(self) -> bool:
        return self.manifest.ok and self.catalog.ok and (self.ann is None or self.ann.ok) and not self.damaged_shards

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "ok": self.ok,
            "manifest": self.manifest.to_dict(),
            "catalog": self.catalog.to_dict(),
            "ann": None if self.ann is None else self.ann.to_dict(),
            "shards": {
                "checked": len(self.shards),
                "segments": sum(s.count for s in self.shards),
                "without_row_hashes": sum(1 for s in self.shards if not s.row_hashes),
                "damaged": [s.to_dict() for s in self.damaged_shards],
            },
            "repaired": list(self.repaired),
        }


def recorded_model(index_dir: Path) -> ModelIdentity:
    """The model that built the index: from the manifest, else (a damaged manifest) from the catalog."""
    try:
        return read_manifest(index_dir).model
    except ManifestCorruptError:
        catalog = Catalog.open(index_dir)
        try:
            raw = catalog.get_meta("model")
        finally:
            catalog.close()
        if raw is None:
            raise
        return ModelIdentity.from_dict(json.loads(raw))


def check_catalog(catalog: Catalog) -> str | None:
    """SQLite's ``PRAGMA integrity_check`` of the catalog (None when it passes; PostgreSQL: not applicable)."""
    if catalog.shared:
        return None
    try:
        with catalog.engine.connect() as conn:
            rows = [str(r[0]) for r in conn.execute(text("PRAGMA integrity_check")).all()]
    except (CatalogError, SQLAlchemyError) as exc:
        return str(exc).splitlines()[0]
    return None if rows == ["ok"] else "; ".join(rows[:3])


def verify_index(index_dir: Path) -> IntegrityReport:
    """Read every stored file of the index whole and compare it with its recorded checksum."""
    index_dir = Path(index_dir)
    manifest: Manifest | None = None
    try:
        manifest = read_manifest(index_dir)
        manifest_status = FileStatus("manifest.json", True)
    except ManifestCorruptError as exc:
        manifest_status = FileStatus("manifest.json", False, exc.message)
    catalog: Catalog | None = None
    try:
        catalog = Catalog.open(index_dir)
        problem = check_catalog(catalog)
        catalog_status = FileStatus(catalog.location.display, problem is None, problem)
    except CatalogError as exc:
        catalog_status = FileStatus(CATALOG_NAME, False, exc.message)
    try:
        infos = _shard_infos(manifest, catalog)
        generation = manifest.generation if manifest is not None else _latest(catalog)
        store = VectorStore(index_dir)
        shards = []
        for info in infos:
            damaged = tuple(store.damaged_files(info, cached=False))
            videos = tuple(_videos(catalog, info.name, generation)) if damaged else ()
            shards.append(ShardStatus(info.name, info.generation, info.count, damaged, videos, ROWHASH in info.sha256))
        ann = None
        if manifest is not None and manifest.ann is not None:
            ann = _check_ann(index_dir, manifest)
        return IntegrityReport(str(index_dir), manifest_status, catalog_status, ann, shards)
    finally:
        if catalog is not None:
            catalog.close()


def _shard_infos(manifest: Manifest | None, catalog: Catalog | None) -> Sequence[ShardInfo]:
    if manifest is not None:
        return manifest.shards
    if catalog is None:
        return ()
    try:
        return catalog_shards(catalog)
    except (CatalogError, SQLAlchemyError):
        return ()


def catalog_shards(catalog: Catalog) -> tuple[ShardInfo, ...]:
    """The shards the catalog records (what a manifest rebuilt from it would name)."""
    return tuple(
        ShardInfo(
            name=r["name"],
            count=int(r["count"]),
            generation=int(r["generation"]),
            sha256=json.loads(r["checksums"]),
            z_dtype=r["z_dtype"],
        )
        for r in catalog.shard_rows()
    )


def _latest(catalog: Catalog | None) -> int:
    if catalog is None:
        return 0
    try:
        return catalog.latest_generation()
    except (CatalogError, SQLAlchemyError):
        return 0


def _videos(catalog: Catalog | None, shard: str, generation: int) -> list[str]:
    if catalog is None:
        return []
    try:
        return catalog.shard_videos(shard, generation)
    except (CatalogError, SQLAlchemyError):
        return []


def _check_ann(index_dir: Path, manifest: Manifest) -> FileStatus:
    info = manifest.ann
    assert info is not None
    path = index_dir / info.file
    if not path.is_file():
        return FileStatus(info.file, False, "missing")
    if sha256_file(path) != info.sha256:
        return FileStatus(info.file, False, "fails its checksum")
    try:
        ann_store.load_ann(index_dir, info, dim=manifest.model.embed_dim)
    except IndexCorruptError as exc:
        return FileStatus(info.file, False, exc.message)
    return FileStatus(info.file, True)


# -- the indexer's hook and the writer's side of a repair -------------------------------------------------------


def record_damage(catalog: Catalog, names: Sequence[str]) -> None:
    """Remember shards found damaged so the next ``index`` run re-embeds their videos (the writer holds the lock)."""
    known = set(_recorded(catalog)) | set(names)
    catalog.set_meta(DAMAGED_KEY, json.dumps(sorted(known)))


def _recorded(catalog: Catalog) -> list[str]:
    raw = catalog.get_meta(DAMAGED_KEY)
    return [str(n) for n in json.loads(raw)] if raw else []


def find_damaged(store: VectorStore, shards: Sequence[ShardInfo], catalog: Catalog) -> dict[str, str]:
    """Shards with a missing or misshapen file (cheap checks) or recorded damaged by a verify: name -> reason."""
    recorded = set(_recorded(catalog))
    found: dict[str, str] = {}
    for info in shards:
        if info.name in recorded:
            found[info.name] = "recorded damaged by 'xclip-search verify'"
            continue
        try:
            store.open_shard(info)
        except ShardCorruptError as exc:
            found[info.name] = exc.message
    return found


def prepare_reembedding(writer: Any, rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The indexer's hook: `rows` (catalog rows by path) with the videos of damaged shards made to look changed.

    Their files are then decoded and embedded again like modified ones; once committed, the damaged shards
    hold no live segment and the writer drops them. Damaged shards without live segments are dropped now.
    Videos whose files are gone, or lie outside this run's roots, stay in their shard: it stays damaged (and
    reported) until they are indexed or pruned.
    """
    damaged = find_damaged(writer.vectors, writer.manifest.shards, writer.catalog)
    if not damaged:
        return rows
    writer.damaged |= set(damaged)
    writer.drop_dead_shards()
    out = dict(rows)
    for name in damaged:
        for path in writer.catalog.shard_videos(name, writer.manifest.generation):
            writer.reembed.add(path)
            if path in out:
                out[path] = {**out[path], "size": -1, "mtime_ns": -1}
    return out


def clear_recorded(catalog: Catalog, still_damaged: Sequence[str]) -> None:
    """Forget recorded damage except for shards still in the manifest."""
    keep = sorted(set(_recorded(catalog)) & set(still_damaged))
    if keep or catalog.get_meta(DAMAGED_KEY) is not None:
        catalog.set_meta(DAMAGED_KEY, json.dumps(keep))


def existing(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """(paths whose files exist, paths whose files are gone)."""
    here = [p for p in paths if os.path.exists(p)]
    gone = [p for p in paths if not os.path.exists(p)]
    return here, gone
