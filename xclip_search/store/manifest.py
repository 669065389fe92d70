"""The manifest: the index's commit point.

A search reads the manifest once and sees exactly the generation it names: the shards of vector data, the
ANN file and its coverage, the model that built the index. A writer publishes a new manifest last, after the
vector files and the catalog rows it refers to are durable, so an interrupted run leaves the previous
generation intact. The manifest carries a checksum of its own body to catch a damaged file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import IndexCorruptError, IndexNotFoundError, ManifestCorruptError
from ..identity import ModelIdentity
from .fsio import atomic_write_bytes

MANIFEST_NAME = "manifest.json"
_REBUILD_HINT = (
    "Run 'xclip-search verify --repair' (or any 'xclip-search index' run) to rebuild it from the catalog's last "
    "generation."
)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ShardInfo:
    """One immutable file set of vector data: ``count`` segments with their ids, ``v`` and ``Z``."""

    name: str
    count: int
    generation: int
    sha256: dict[str, str]
    z_dtype: str = "float32"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardInfo:
        return cls(
            name=str(d["name"]),
            count=int(d["count"]),
            generation=int(d["generation"]),
            sha256={str(k): str(v) for k, v in d["sha256"].items()},
            z_dtype=str(d.get("z_dtype", "float32")),
        )


@dataclass(frozen=True)
class AnnInfo:
    """The ANN cache file: what it is, its checksum, and the generation of the vectors it covers."""

    file: str
    sha256: str
    kind: str
    count: int
    generation: int
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnnInfo:
        return cls(
            file=str(d["file"]),
            sha256=str(d["sha256"]),
            kind=str(d["kind"]),
            count=int(d["count"]),
            generation=int(d["generation"]),
            params=dict(d.get("params", {})),
        )


@dataclass(frozen=True)
class Manifest:
    generation: int
    model: ModelIdentity
    shards: tuple[ShardInfo, ...]
    ann: AnnInfo | None
    created_at: str
    updated_at: str
    format: int = FORMAT_VERSION

    @property
    def vector_count(self) -> int:
        return sum(s.count for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "generation": self.generation,
            "model": self.model.to_dict(),
            "shards": [asdict(s) for s in self.shards],
            "ann": asdict(self.ann) if self.ann else None,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        return cls(
            format=int(d["format"]),
            generation=int(d["generation"]),
            model=ModelIdentity.from_dict(d["model"]),
            shards=tuple(ShardInfo.from_dict(s) for s in d["shards"]),
            ann=AnnInfo.from_dict(d["ann"]) if d.get("ann") else None,
            created_at=str(d["created_at"]),
            updated_at=str(d["updated_at"]),
        )


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _body_checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Publish `manifest` atomically: the commit point of a generation."""
    body = manifest.to_dict()
    doc = {**body, "checksum": _body_checksum(body)}
    atomic_write_bytes(directory / MANIFEST_NAME, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())


def read_manifest(directory: Path) -> Manifest:
    """Read and verify the published manifest of the index at `directory`."""
    path = directory / MANIFEST_NAME
    if not directory.exists():
        raise IndexNotFoundError(
            f"No index at {directory}",
            hint="Build one with 'xclip-search index PATH --index DIR', or pass --index / set XCLIP_SEARCH_INDEX.",
        )
    if not path.is_file() and (directory / "catalog.sqlite").is_file():
        raise ManifestCorruptError(f"{path} is missing", hint=_REBUILD_HINT)
    if not path.is_file():
        raise IndexNotFoundError(
            f"{directory} is not an xclip-search index (no {MANIFEST_NAME})",
            hint="Build one with 'xclip-search index PATH --index DIR'.",
        )
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ManifestCorruptError(f"Cannot parse {path}: {first}", hint=_REBUILD_HINT) from exc
    if not isinstance(doc, dict):
        raise ManifestCorruptError(f"{path} is not a manifest", hint=_REBUILD_HINT)
    checksum = doc.pop("checksum", None)
    if checksum != _body_checksum(doc):
        raise ManifestCorruptError(f"{path} fails its checksum; the file was modified or damaged", hint=_REBUILD_HINT)
    if doc.get("format") != FORMAT_VERSION:
        raise IndexCorruptError(
            f"{path} has format {doc.get('format')}; this xclip-search reads format {FORMAT_VERSION}",
            hint="Upgrade xclip-search, or rebuild the index.",
        )
    try:
        return Manifest.from_dict(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ManifestCorruptError(f"{path} is missing fields: {exc}", hint=_REBUILD_HINT) from exc
