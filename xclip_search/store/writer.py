"""The single writer of an index directory and its commit protocol.

One batch becomes one generation in four durable steps:

1. ``shard-written``: the batch's ids, ``v`` and ``Z`` are published as a new immutable shard;
2. ``catalog-committed``: one SQL transaction records the shard, the video rows and their segments;
3. ``manifest-published``: the manifest naming the new generation replaces the old one (the commit point).

A crash before step 2 leaves an unreferenced shard that the next writer deletes; a crash between 2 and 3 leaves
a catalog one generation ahead, which the next writer rolls forward by publishing its manifest (the shard is
already durable). Readers only ever follow the manifest, so they see the previous generation or the new one.
The ANN cache is rebuilt after a run and published the same way.

On SQLite one writer holds the index (a ``flock`` on the directory, for the whole run). On a shared PostgreSQL
catalog several writers, on several machines, add to one index: each commit (generation number, shard file,
catalog transaction, manifest) runs under the catalog's advisory lock and starts from the manifest and
catalog as the previous holder left them, and drops the files another writer committed first.

A shard whose ``v`` and ``Z`` another process wrote (a distributed indexer's worker) goes through the same steps
(`commit_written`): this writer adds its ids file, then commits and publishes it; until then it is unreferenced
and deleted like any other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType

import numpy as np

from ..errors import CatalogError, IndexCorruptError, IndexMismatchError, InvalidArgumentError, ManifestCorruptError
from ..identity import ModelIdentity
from . import ann as ann_store
from . import compaction
from .catalog import CATALOG_NAME, BatchEntry, Catalog, FileUpdate, SegmentRecord, VideoRecord
from .cues import Cue
from .fsio import crash_point, remove_stale_temporaries, writer_lock
from .location import LOCATION_FILE, CatalogLocation, is_default, read_recorded, record, resolve
from .manifest import MANIFEST_NAME, AnnInfo, Manifest, ShardInfo, now_iso, read_manifest, write_manifest
from .thumbshards import remove_unreferenced as remove_unreferenced_thumbnails
from .thumbshards import write_thumbnail_shard
from .vectors import ROWHASH, VectorStore, VectorView, WrittenParts

ANN_POLICY_KEY = "ann_policy"
log = logging.getLogger("xclip_search.store")
# The most vectors of newer shards a trained ANN index leaves to the snapshot's exact scan (see publish_ann).
TAIL_MAX = 100_000

_OWN_ENTRIES = {MANIFEST_NAME, CATALOG_NAME, LOCATION_FILE, "vectors", "ann", "writer.lock", "thumbnails"}


def check_model(recorded: ModelIdentity, wanted: ModelIdentity, index_dir: Path) -> None:
    """Refuse to mix embeddings of two models in one index."""
    same = (
        recorded.config_hash == wanted.config_hash
        and recorded.source == wanted.source
        and (recorded.revision is None or wanted.revision is None or recorded.revision == wanted.revision)
    )
    if not same:
        rev = f"@{recorded.revision}" if recorded.revision else ""
        raise IndexMismatchError(
            f"The index at {index_dir} was built with {recorded.source}{rev}; "
            f"refusing to add embeddings from {wanted.source}",
            hint="Omit --model to use the index's own model, or choose another --index directory.",
        )


def check_index_dir(index_dir: Path) -> None:
    """Refuse to write an index into a file or into a folder that holds something else (before any work)."""
    if index_dir.exists() and not index_dir.is_dir():
        raise InvalidArgumentError(f"{index_dir} is a file, not a directory", argument="index")
    if index_dir.is_dir() and not (index_dir / MANIFEST_NAME).exists():
        foreign = [p.name for p in index_dir.iterdir() if p.name not in _OWN_ENTRIES and not p.name.startswith(".")]
        if foreign:
            raise InvalidArgumentError(
                f"{index_dir} is not empty and is not an xclip-search index",
                hint="Choose a new or empty directory for --index.",
            )


class IndexWriter:
    """Adds, replaces and retires videos in an index; use as a context manager (it holds the writer lock).

    `catalog_url` names the catalog database for a new index (or the same one again, with its password);
    by default the catalog the directory records, else ``catalog.sqlite`` in it (see `location`).
    """

    def __init__(
        self, index_dir: Path, identity: ModelIdentity, *, z_dtype: str = "float32", catalog_url: str | None = None
    ) -> None:
        self.dir = Path(index_dir)
        self.catalog_url = catalog_url
        # Paths dropped from a batch because another writer sharing the catalog committed them first.
        self.dropped: list[str] = []
        self.identity = identity
        self.z_dtype = z_dtype
        self.vectors = VectorStore(self.dir)
        self._lock: contextlib.ExitStack | None = None
        self._entries: list[BatchEntry] = []
        self._v: list[np.ndarray] = []
        self._thumbs: list[list[bytes | None]] = []  # per add(), like _v and _z
        self._z: list[np.ndarray] = []
        self._owners: list[BatchEntry] = []  # the entry each item of _v and _z belongs to
        self._removed: list[str] = []
        self._updates: list[FileUpdate] = []
        self.catalog: Catalog
        self.manifest: Manifest
        self.run_id: int | None = None
        self.changed = False
        # Shards found damaged (see store.integrity): dropped from the manifest once none of their segments is
        # live any more, i.e. once their videos were re-embedded or retired.
        self.damaged: set[str] = set()
        self.reembed: set[str] = set()  # their videos' paths: re-embedded although their stamps are unchanged
        self._shards_dropped = False

    # -- lifecycle ---------------------------------------------------------------------------------------

    def __enter__(self) -> IndexWriter:
        self._prepare_directory()
        location = resolve(self.dir, self.catalog_url)
        stack = contextlib.ExitStack()
        if not location.shared:
            stack.enter_context(writer_lock(self.dir))
        self._lock = stack
        try:
            self._open(location)
        except BaseException:
            stack.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self.flush()
        finally:
            self.catalog.close()
            if self._lock is not None:
                self._lock.close()

    def _prepare_directory(self) -> None:
        check_index_dir(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def shared(self) -> bool:
        """Whether other writers may commit to this index concurrently (a PostgreSQL catalog)."""
        return self.catalog.shared

    def _open(self, location: CatalogLocation) -> None:
        self.catalog = Catalog.open(self.dir, url=self.catalog_url, create=True)
        try:
            with self.catalog.commit_lock():
                self._open_locked(location)
        except BaseException:
            self.catalog.close()
            raise

    def _open_locked(self, location: CatalogLocation) -> None:
        # Under the commit lock (or the flock): no other writer is publishing a file right now.
        for sub in (self.dir, self.dir / "vectors", self.dir / "ann"):
            remove_stale_temporaries(sub)
        fresh = not (self.dir / MANIFEST_NAME).exists()
        self._check_location(location, fresh)
        recorded = self.catalog.get_meta("model")
        if recorded is None:
            self.catalog.set_meta("model", json.dumps(self.identity.to_dict(), sort_keys=True))
        else:
            check_model(ModelIdentity.from_dict(json.loads(recorded)), self.identity, self.dir)
        if fresh:
            now = now_iso()
            generation = self.catalog.latest_generation()
            self.manifest = Manifest(
                generation=generation,
                model=self.identity,
                shards=self._catalog_shards(),
                ann=None,
                created_at=now,
                updated_at=now,
            )
            write_manifest(self.dir, self.manifest)
        else:
            try:
                self.manifest = read_manifest(self.dir)
            except ManifestCorruptError as exc:
                self.manifest = self._manifest_from_catalog()
                log.warning("Warning: %s; rebuilt it from the catalog (generation %d)", exc, self.manifest.generation)
            check_model(self.manifest.model, self.identity, self.dir)
            self._recover()
        # Shards a compaction retired stay for readers on older generations until their grace ends.
        referenced = {s.name for s in self.manifest.shards} | compaction.kept_retired(self.catalog)
        self.vectors.remove_unreferenced(referenced)
        remove_unreferenced_thumbnails(self.dir, referenced)
        compaction.reclaim_retired(self.catalog, self.vectors)

    def _check_location(self, location: CatalogLocation, fresh: bool) -> None:
        """Tie the directory and its catalog together with an index id (recorded in both), or refuse a mix."""
        catalog_id = self.catalog.get_meta("index_id")
        recorded = read_recorded(self.dir)
        default = is_default(location, self.dir)
        foreign = recorded is None or recorded["index_id"] != catalog_id
        if fresh and location.shared and catalog_id is not None and foreign and self.catalog.latest_generation() > 0:
            raise CatalogError(
                f"The catalog at {location.display} already holds another index; {self.dir} has no manifest",
                hint="Give each index its own database (or schema), or use the index directory it belongs to.",
            )
        if not fresh and recorded is None and not default:
            raise CatalogError(
                f"The index at {self.dir} keeps its catalog in {CATALOG_NAME}; it cannot move to {location.display}",
                hint="Leave out --catalog (and XCLIP_SEARCH_CATALOG) for this index, or build a new one.",
            )
        if catalog_id is None:
            catalog_id = uuid.uuid4().hex
            self.catalog.set_meta("index_id", catalog_id)
        if fresh and not default:
            record(self.dir, location.url, catalog_id)

    def _catalog_shards(self) -> tuple[ShardInfo, ...]:
        return tuple(
            ShardInfo(
                name=r["name"],
                count=int(r["count"]),
                generation=int(r["generation"]),
                sha256=json.loads(r["checksums"]),
                z_dtype=r["z_dtype"],
            )
            for r in self.catalog.shard_rows()
        )

    def _manifest_from_catalog(self) -> Manifest:
        """A new manifest for the catalog's last committed generation (the old one is unreadable), published.

        The catalog holds everything a manifest names except the ANN cache, which the next `publish_ann`
        rebuilds; until then searches scan the shards exactly.
        """
        recorded = self.catalog.get_meta("model")
        model = ModelIdentity.from_dict(json.loads(recorded)) if recorded is not None else self.identity
        now = now_iso()
        manifest = Manifest(
            generation=self.catalog.latest_generation(),
            model=model,
            shards=self._catalog_shards(),
            ann=None,
            created_at=now,
            updated_at=now,
        )
        write_manifest(self.dir, manifest)
        return manifest

    def drop_dead_shards(self) -> list[str]:
        """Drop from the manifest (and catalog) the damaged shards none of whose segments is live any more.

        Their videos were re-embedded into new shards (or retired); the ANN, which may still hold their ids,
        is dropped with them and rebuilt by the next `publish_ann`. Returns the shards dropped.
        """
        shards, dead = self._without_dead(self.manifest.generation)
        if dead:
            with self.catalog.commit_lock():
                self.catalog.drop_shard_rows(dead)
                self.manifest = replace(self.manifest, shards=shards, ann=self._ann_after(dead), updated_at=now_iso())
                write_manifest(self.dir, self.manifest)
        return dead

    def add_row_hashes(self) -> list[str]:
        """Give the shards written before row hashes existed their row-hash file; returns the shards upgraded.

        Only shards whose files match the manifest's sha256s are upgraded (hashing damaged rows would bless
        them); the file is published before the catalog and manifest name it, so a crash leaves it unused.
        """
        upgraded: list[str] = []
        shards: list[ShardInfo] = []
        for info in self.manifest.shards:
            if ROWHASH not in info.sha256 and not self.vectors.damaged_files(info, cached=False):
                info = replace(info, sha256={**info.sha256, ROWHASH: self.vectors.write_row_hashes(info)})
                self.catalog.set_shard_checksums(info.name, info.sha256)
                upgraded.append(info.name)
            shards.append(info)
        if upgraded:
            with self.catalog.commit_lock():
                self.manifest = replace(self.manifest, shards=tuple(shards), updated_at=now_iso())
                write_manifest(self.dir, self.manifest)
        return upgraded

    def _without_dead(self, generation: int) -> tuple[tuple[ShardInfo, ...], list[str]]:
        dead = [
            s.name
            for s in self.manifest.shards
            if s.name in self.damaged and not self.catalog.shard_videos(s.name, generation)
        ]
        if dead:
            self.damaged -= set(dead)
            self._shards_dropped = True
        return tuple(s for s in self.manifest.shards if s.name not in dead), dead

    def _ann_after(self, dead: Sequence[str]) -> AnnInfo | None:
        """The ANN entry once shards `dead` are gone: none if it may hold their ids (it is rebuilt)."""
        ann = self.manifest.ann
        if ann is None or not dead:
            return ann
        first = min(s.generation for s in self.manifest.shards if s.name in dead)
        return None if ann.generation >= first else ann

    def _recover(self) -> None:
        """Roll the manifest forward to the catalog's last committed generation (see the module docstring)."""
        catalog_gen = self.catalog.latest_generation()
        if catalog_gen == self.manifest.generation:
            return
        if catalog_gen < self.manifest.generation:
            raise IndexCorruptError(
                f"The catalog of {self.dir} is at generation {catalog_gen} but the manifest at "
                f"{self.manifest.generation}; the catalog lost committed data"
            )
        shards = self._catalog_shards()
        for info in shards:
            self.vectors.open_shard(info)  # the shard must be whole before it is published
        # A compaction replaced shards: the ANN covers the old ones by generation and goes (rebuilt later).
        gone = {s.name for s in self.manifest.shards} - {s.name for s in shards}
        ann = None if gone else self.manifest.ann
        self.manifest = replace(self.manifest, generation=catalog_gen, shards=shards, ann=ann, updated_at=now_iso())
        write_manifest(self.dir, self.manifest)

    # -- batches -----------------------------------------------------------------------------------------

    def reserve_ids(self, count: int) -> int:
        return self.catalog.reserve_segment_ids(count)

    def add(
        self,
        video: VideoRecord,
        segments: Sequence[SegmentRecord],
        v: np.ndarray,
        z: np.ndarray,
        *,
        thumbnails: Sequence[bytes | None] | None = None,
        cues: Sequence[Cue] = (),
    ) -> None:
        """Queue an indexed video with its segments (ids already reserved), their vectors and JPEG thumbnails, and
        the cues of the text streams inside its file."""
        if len(segments) != len(v) or len(segments) != len(z):
            raise ValueError("one v and one Z per segment")
        if thumbnails is not None and len(thumbnails) != len(segments):
            raise ValueError("one thumbnail (or None) per segment")
        entry = BatchEntry(video=video, segments=list(segments), cues=list(cues))
        self._entries.append(entry)
        self._owners.append(entry)
        self._thumbs.append(list(thumbnails) if thumbnails is not None else [None] * len(segments))
        self._v.append(np.asarray(v, np.float32))
        self._z.append(np.asarray(z, np.float32))

    def record(self, video: VideoRecord) -> None:
        """Queue a video row without vectors (failed, skipped)."""
        self._entries.append(BatchEntry(video=video, segments=[]))

    def remove(self, paths: Sequence[str]) -> None:
        """Queue the retirement of videos that disappeared (``--prune``)."""
        self._removed.extend(paths)

    def update_file(self, change: FileUpdate) -> None:
        """Queue a move or re-stamp of an indexed file (its vectors stay as they are)."""
        self._updates.append(change)

    @property
    def pending_segments(self) -> int:
        return sum(len(e.segments) for e in self._entries)

    @property
    def pending(self) -> bool:
        return bool(self._entries or self._removed or self._updates)

    def flush(self) -> int:
        """Commit what is queued as one new generation; returns the generation now published."""
        if not self.pending:
            return self.manifest.generation
        with self.catalog.commit_lock():
            return self._flush_locked()

    def _refresh(self) -> None:
        """Start from what the last writer published (shared catalogs; the caller holds the commit lock)."""
        if self.catalog.shared:
            self.manifest = read_manifest(self.dir)
            self._recover()

    def _drop_committed_elsewhere(self) -> None:
        """Leave out of the batch the files another writer indexed, identical, since this run looked."""
        if not self._entries:
            return
        done = self.catalog.already_indexed([e.video for e in self._entries]) - self.reembed
        if not done:
            return
        self.dropped.extend(e.video.path for e in self._entries if e.video.path in done)
        self._entries = [e for e in self._entries if e.video.path not in done]
        kept = [k for k, owner in enumerate(self._owners) if owner.video.path not in done]
        self._owners = [self._owners[k] for k in kept]
        self._v = [self._v[k] for k in kept]
        self._z = [self._z[k] for k in kept]
        self._thumbs = [self._thumbs[k] for k in kept]

    def _flush_locked(self) -> int:
        self._refresh()
        self._drop_committed_elsewhere()
        if not self.pending:
            return self.manifest.generation
        generation = self.manifest.generation + 1
        shard: ShardInfo | None = None
        segs = [s for e in self._entries for s in e.segments]
        if segs:
            offset = 0
            for e in self._entries:
                for s in e.segments:
                    s.row = offset
                    offset += 1
            ids = np.array([s.id for s in segs], dtype=np.int64)
            shard = self.vectors.write_shard(
                generation, ids, np.concatenate(self._v), np.concatenate(self._z), z_dtype=self.z_dtype
            )
            thumbs = [t for per_video in self._thumbs for t in per_video]
            if any(t is not None for t in thumbs):
                write_thumbnail_shard(self.dir, shard.name, thumbs)
        return self._commit(generation, shard, self._entries)

    def commit_written(self, parts: WrittenParts, entries: Sequence[BatchEntry]) -> int:
        """Commit, with whatever is queued, a shard whose ``v`` and ``Z`` another process already wrote.

        The distributed indexer's workers write `parts` into this index's ``vectors/``; only this writer (the
        one committer) assigns segment ids, so it writes the ids file, then the catalog transaction, then the
        manifest: the same crash-safe order as `flush`, under the same commit lock. Each segment's ``row`` is its
        row in `parts`, and the segments must cover every row once. Returns the generation now published.
        """
        if self._v:  # queued vectors go into their own shard first
            self.flush()
        ids = np.full(parts.count, -1, dtype=np.int64)
        for e in entries:
            for s in e.segments:
                if not 0 <= s.row < parts.count or ids[s.row] != -1:
                    raise ValueError(f"segment row {s.row} is outside shard {parts.name} or given twice")
                ids[s.row] = s.id
        if (ids < 0).any():
            raise ValueError(f"shard {parts.name} has rows no segment refers to")
        with self.catalog.commit_lock():
            self._refresh()
            self._drop_committed_elsewhere()
            done = self.catalog.already_indexed([e.video for e in entries]) - self.reembed
            generation = self.manifest.generation + 1
            if not done:
                shard: ShardInfo | None = self.vectors.complete_shard(parts, generation, ids)
            else:
                self.dropped.extend(e.video.path for e in entries if e.video.path in done)
                entries = [e for e in entries if e.video.path not in done]
                shard = self._shard_without_dropped(parts, entries, generation)
            return self._commit(generation, shard, [*self._entries, *entries])

    def _shard_without_dropped(
        self, parts: WrittenParts, kept: Sequence[BatchEntry], generation: int
    ) -> ShardInfo | None:
        """A new shard holding only `kept`'s rows of `parts` (renumbering their segments' rows); None if empty.

        Another writer sharing the catalog committed some of the files in `parts` since this run looked; as in
        `flush`, their copies are dropped rather than committed twice. The worker's files are deleted: no
        catalog row will ever name them.
        """
        segments = sorted((s for e in kept for s in e.segments), key=lambda s: s.row)
        rows = np.array([s.row for s in segments], dtype=np.int64)
        shard = None
        if len(rows):
            v = np.load(self.vectors.path(parts.name, "v"), mmap_mode="r", allow_pickle=False)
            z = np.load(self.vectors.path(parts.name, "z"), mmap_mode="r", allow_pickle=False)
            for new_row, s in enumerate(segments):
                s.row = new_row
            ids = np.array([s.id for s in segments], dtype=np.int64)
            shard = self.vectors.write_shard(generation, ids, v[rows], z[rows], z_dtype=parts.z_dtype)
        for part in ("v", "z"):
            self.vectors.path(parts.name, part).unlink(missing_ok=True)
        return shard

    def _commit(self, generation: int, shard: ShardInfo | None, entries: Sequence[BatchEntry]) -> int:
        crash_point("shard-written")
        self.catalog.commit_batch(generation, self.run_id, entries, shard, self._removed, self._updates)
        crash_point("catalog-committed")
        kept, dead = self._without_dead(generation) if self.damaged else (self.manifest.shards, [])
        self.catalog.drop_shard_rows(dead)
        shards = (*kept, shard) if shard else kept
        self.manifest = replace(
            self.manifest, generation=generation, shards=shards, ann=self._ann_after(dead), updated_at=now_iso()
        )
        write_manifest(self.dir, self.manifest)
        crash_point("manifest-published")
        self._entries, self._v, self._z, self._removed, self._updates = [], [], [], [], []
        self._owners, self._thumbs = [], []
        self.changed = True
        return generation

    # -- compaction ----------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Start from what the last writer published (shared catalogs; the caller holds the commit lock)."""
        self._refresh()

    def compact(
        self, policy: compaction.CompactionPolicy | None = None, *, force: bool = False
    ) -> compaction.CompactionReport:
        """Rewrite wasteful shards if `policy` (default: the defaults) or `force` says so; see `store.compaction`."""
        return compaction.compact(self, policy or compaction.CompactionPolicy(), force=force)

    # -- ANN ---------------------------------------------------------------------------------------------

    def set_ann_policy(self, kind: str, memory_budget: int) -> None:
        """Record which ANN kind and memory budget later runs (``index``) rebuild with."""
        ann_store.check_kind(kind)
        self.catalog.set_meta(ANN_POLICY_KEY, json.dumps({"kind": kind, "memory_budget": int(memory_budget)}))

    def ann_policy(self) -> tuple[str, int]:
        """The recorded (kind, memory budget), or auto with the default budget."""
        raw = self.catalog.get_meta(ANN_POLICY_KEY)
        if raw is None:
            return "auto", ann_store.DEFAULT_MEMORY_BUDGET
        doc = json.loads(raw)
        return str(doc.get("kind", "auto")), int(doc.get("memory_budget", ann_store.DEFAULT_MEMORY_BUDGET))

    def _ann_is_fresh_enough(self, current: AnnInfo) -> bool:
        """A trained (non-flat) index may leave a small tail of newer shards to the snapshot's exact scan.

        Retraining IVF-PQ over millions of vectors takes minutes; an ``index`` run that added a few videos
        should not pay that. The tail is scanned exactly by every search, so it is kept below 10% of the index
        and below `TAIL_MAX` vectors; likewise retired segments (over-fetched by every search).
        """
        if current.kind == "flat":
            return False
        tail = sum(s.count for s in self.manifest.shards if s.generation > current.generation)
        retired = self.catalog.retired_since(current.generation, self.manifest.generation)
        limit = min(TAIL_MAX, max(1, current.count // 10))
        return tail <= limit and retired <= limit

    def publish_ann(
        self,
        *,
        force: bool = False,
        kind: str | None = None,
        memory_budget: int | None = None,
        use_gpu: bool | None = None,
    ) -> AnnInfo | None:
        """Rebuild the ANN cache over the live segments of the current generation, if it is out of date.

        `kind` and `memory_budget` default to the recorded policy (`set_ann_policy`), else auto and
        `ann.DEFAULT_MEMORY_BUDGET`; `force` rebuilds even an up-to-date index (``reindex``).
        """
        self.flush()
        if self.shared:
            with self.catalog.commit_lock():
                self._refresh()
        current = self.manifest.ann
        recorded_kind, recorded_budget = self.ann_policy()
        kind = kind or recorded_kind
        budget = memory_budget or recorded_budget
        up_to_date = current is not None and (
            current.generation == self.manifest.generation or self._ann_is_fresh_enough(current)
        )
        if current is not None and up_to_date and not force and not self._shards_dropped:
            return current
        generation = self.manifest.generation
        view = VectorView(
            self.vectors, self.manifest.shards, holders=lambda name: self.catalog.shard_videos(name, generation)
        )
        # The ANN is built only from shards whose every file matches the manifest's sha256 (read whole).
        for i in range(len(view.shards)):
            view.verify_whole(i)
        live = self.catalog.live_segment_ids(generation)
        dim = self.identity.embed_dim
        plan = ann_store.plan_ann(len(live), dim, kind=kind, memory_budget=budget)
        report = ann_store.BuildReport()
        # Built outside the commit lock (minutes for a large IVF-PQ): the shards it reads are immutable.
        index = ann_store.build_index(
            plan, view.shards, live, dim, use_gpu=use_gpu, chunk=ann_store.add_chunk(), report=report
        )
        crash_point("ann-built")
        params = {
            **plan.params,
            "exact": plan.exact,
            "memory_bytes": plan.memory_bytes,
            "reason": plan.reason,
            "build": report.to_dict(),
        }
        with self.catalog.commit_lock():
            self._refresh()
            newer = self.manifest.ann
            if self.shared and newer is not None and newer.generation >= generation and not force:
                return newer  # another writer published one at least as new meanwhile
            suffix = f"-{uuid.uuid4().hex[:8]}" if self.shared else ""
            info = ann_store.write_ann(
                self.dir, index, generation=generation, kind=plan.kind, params=params, suffix=suffix
            )
            crash_point("ann-written")
            self.manifest = replace(self.manifest, ann=info, updated_at=now_iso())
            write_manifest(self.dir, self.manifest)
            crash_point("ann-published")
            ann_store.remove_unreferenced(self.dir, keep=info.file)
        self._shards_dropped = False
        return info
