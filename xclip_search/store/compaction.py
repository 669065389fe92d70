"""Compaction: rewriting the live rows of wasteful vector shards into new shards, as one new generation.

Shards are immutable, so a replaced or pruned video leaves its rows behind (dead rows: still on disk, still
scanned, over-fetched by every search) and every run adds a shard, often a small one. Compaction copies the live
rows of the *victims* into new shards of at most `CompactionPolicy.shard_bytes` of vectors, streaming:

- victims are the shards holding a dead row, and the small shards (under `small_shard_rows` rows) once there are
  more than `max_small_shards` of them; large, fully live shards are left alone, so a compaction copies only
  what must move;
- it runs when the dead rows exceed `dead_fraction` of all rows or when there are too many small shards. With
  the default 0.2, the vector data after a run never exceeds 1.25x a fresh index's (plus retired files during
  their grace), and a compaction triggered by dead rows copies fewer than 4 live rows per dead row it reclaims
  (live < 4 x dead overall): the write amplification stays bounded, while a nightly run that changes a few
  files triggers nothing. Small shards cost a file open, a memory map and a scan each; 16 of them are cheap,
  hundreds (a year of nightly runs) are not.

Every copied row is checked against its row hash (shards from before row hashes: against the manifest's
sha256, whole) before it is written again; a damaged row stops the compaction (`ShardCorruptError`, hint
``verify --repair``): it is never copied into a shard that would bless it with a fresh hash.

The commit follows the writer's protocol: new shard files (and their thumbnails) are published first
(``compact-written``), one catalog transaction records the new generation, the new shards, each moved
segment's shard and row, and drops the old shard rows (``compact-committed``), and the manifest naming the new
shards is published (``compact-published``). A crash before the catalog commit leaves unreferenced new files
that the next writer deletes; after it, the next writer rolls the manifest forward (without the ANN, which is
rebuilt). Segment ids do not change, so tags stay valid and the ANN could keep its ids; it is nevertheless
dropped and rebuilt from the new shards (by ``index`` at the end of its run, by ``compact`` at once): the ANN
covers shards by generation, and the compacted shards, newer than any ANN, would otherwise be scanned *and*
found through the ANN.

Old shard files are *retired*, not deleted: a reader that opened an older generation still finds them. They
are recorded in the catalog (meta ``retired_shards``, in the same transaction) with a deletion time `grace_s`
after the compaction, and the first writer to open the index after that time (or the compaction itself, with a
zero grace) deletes them. A grace rather than reader leases, because readers are short-lived by design: the
server moves to the newest generation at every request (`Index.refresh`), so an older generation is held only
by a request in progress or a CLI search, minutes at most; leases would add a file lock to every search and
leave files behind for a reader that hangs. A snapshot still verifies the shards it scans by their files, so a
reader kept on an older generation past the grace fails with a damaged-shard error instead of a wrong answer.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ShardCorruptError
from .fsio import crash_point, fsync_dir
from .manifest import Manifest, ShardInfo, now_iso, write_manifest
from .thumbshards import read_stored, thumbnail_paths, write_thumbnail_shard
from .vectors import PARTS, REPAIR_HINT, ROWHASH, VectorStore, file_matches, row_hashes

if TYPE_CHECKING:
    from .catalog import Catalog
    from .writer import IndexWriter

log = logging.getLogger("xclip_search.store")
RETIRED_KEY = "retired_shards"


@dataclass(frozen=True)
class CompactionPolicy:
    """When a run compacts, and what it does with the old files (see the module docstring for the why)."""

    dead_fraction: float = 0.2  # compact once dead rows exceed this share of all rows
    small_shard_rows: int = 4096  # a shard with fewer rows is small
    max_small_shards: int = 16  # ... and more small shards than this are merged
    shard_bytes: int = 256 << 20  # the most bytes of v and Z a new shard holds (and compaction holds in memory)
    grace_s: float = 600.0  # retired shard files are kept this long for readers on older generations


@dataclass(frozen=True)
class CompactionStats:
    """The state of a generation's vector data, as ``info`` shows it."""

    live_rows: int
    dead_rows: int
    shards: int
    small_shards: int
    reclaimable_bytes: int  # what a compaction now would free (the dead rows' share of their shards' files)
    retired_bytes: int  # files of earlier compactions still kept for older readers (see `CompactionPolicy`)

    def to_dict(self) -> dict[str, int]:
        return {
            "live_rows": self.live_rows,
            "dead_rows": self.dead_rows,
            "shards": self.shards,
            "small_shards": self.small_shards,
            "reclaimable_bytes": self.reclaimable_bytes,
            "retired_bytes": self.retired_bytes,
        }


@dataclass(frozen=True)
class CompactionReport:
    """What one compaction did (the ``compact --json`` shape)."""

    compacted: bool
    reason: str
    generation: int
    shards_before: int
    shards_after: int
    rows_copied: int
    rows_dropped: int
    bytes_before: int
    bytes_after: int
    files_deleted: int
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {
            "compacted": self.compacted,
            "reason": self.reason,
            "generation": self.generation,
            "shards_before": self.shards_before,
            "shards_after": self.shards_after,
            "rows_copied": self.rows_copied,
            "rows_dropped": self.rows_dropped,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "files_deleted": self.files_deleted,
            "seconds": round(self.seconds, 3),
        }


def shard_bytes(store: VectorStore, name: str) -> int:
    """Bytes of a shard's vector files and thumbnails on disk."""
    paths = [store.path(name, part) for part in (*PARTS, ROWHASH)]
    paths += list(thumbnail_paths(store.root.parent, name))
    return sum(p.stat().st_size for p in paths if p.is_file())


def stats(
    manifest: Manifest,
    catalog: Catalog,
    store: VectorStore,
    policy: CompactionPolicy,
    live: dict[str, int] | None = None,
) -> CompactionStats:
    """`live`: the generation's live rows by shard when the caller has them (one catalog scan per check)."""
    if live is None:
        live = catalog.live_rows_by_shard(manifest.generation)
    total = manifest.vector_count
    live_rows = sum(min(live.get(s.name, 0), s.count) for s in manifest.shards)
    reclaim = 0
    for s in manifest.shards:
        dead = s.count - min(live.get(s.name, 0), s.count)
        if dead and s.count:
            reclaim += shard_bytes(store, s.name) * dead // s.count
    retired = sum(shard_bytes(store, str(r["name"])) for r in retired_shards(catalog))
    return CompactionStats(
        live_rows=live_rows,
        dead_rows=total - live_rows,
        shards=len(manifest.shards),
        small_shards=sum(1 for s in manifest.shards if s.count < policy.small_shard_rows),
        reclaimable_bytes=reclaim,
        retired_bytes=retired,
    )


def reason_to_compact(st: CompactionStats, policy: CompactionPolicy) -> str | None:
    """Why the policy compacts this state, or None."""
    total = st.live_rows + st.dead_rows
    if total and st.dead_rows / total > policy.dead_fraction:
        return f"{st.dead_rows} of {total} vector rows are dead (over {policy.dead_fraction:.0%})"
    if st.small_shards > policy.max_small_shards:
        return f"{st.small_shards} small shards (over {policy.max_small_shards})"
    return None


def retired_shards(catalog: Catalog) -> list[dict[str, object]]:
    """The retired shard files still kept: [{name, generation, delete_after (epoch seconds)}]."""
    raw = catalog.get_meta(RETIRED_KEY)
    return list(json.loads(raw)) if raw else []


def kept_retired(catalog: Catalog) -> set[str]:
    """Names of the retired shards whose files the next writer must not delete yet."""
    now = time.time()
    return {str(r["name"]) for r in retired_shards(catalog) if float(str(r["delete_after"])) > now}


def reclaim_retired(catalog: Catalog, store: VectorStore) -> int:
    """Delete the files of retired shards past their grace (the writer lock holder only); files deleted."""
    entries = retired_shards(catalog)
    if not entries:
        return 0
    now = time.time()
    due = [r for r in entries if float(str(r["delete_after"])) <= now]
    deleted = 0
    for r in due:
        name = str(r["name"])
        for path in [store.path(name, part) for part in (*PARTS, ROWHASH)] + list(
            thumbnail_paths(store.root.parent, name)
        ):
            if path.is_file():
                path.unlink(missing_ok=True)
                deleted += 1
    if due:
        fsync_dir(store.root)
        crash_point("compact-reclaimed")
        # Files first, then the record: a crash in between leaves names whose files are gone (deleted again).
        catalog.set_meta(RETIRED_KEY, json.dumps([r for r in entries if r not in due]))
    return deleted


def _copy_verified(store: VectorStore, info: ShardInfo, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``v`` and ``Z`` (as stored) of the rows of segments `ids` in shard `info`, checked before they are copied."""
    shard = store.open_shard(info)
    order = np.argsort(shard.ids)
    pos = order[np.searchsorted(shard.ids, ids, sorter=order)]
    if not np.array_equal(np.asarray(shard.ids)[pos], ids):
        raise ShardCorruptError(
            f"Vector shard {info.name} is damaged: it lacks segments the catalog places in it",
            shard=info.name,
            hint=REPAIR_HINT,
        )
    v = np.asarray(shard.v[pos])
    z = np.asarray(shard.z[pos])
    if shard.rowhash is None:
        bad = [p for p, digest in info.sha256.items() if not file_matches(store.path(info.name, p), digest)]
    else:
        expected = np.asarray(shard.rowhash[pos])
        bad = [
            part
            for col, (part, data) in enumerate((("v", v), ("z", z)))
            if not np.array_equal(row_hashes(ids, data), expected[:, col])
        ]
    if bad:
        raise ShardCorruptError(
            f"Vector shard {info.name} is damaged ({', '.join(sorted(bad))} failing its checks); not compacting it",
            shard=info.name,
            hint=REPAIR_HINT,
        )
    return v, z


def compact(writer: IndexWriter, policy: CompactionPolicy, *, force: bool = False) -> CompactionReport:
    """Compact the writer's index if the policy (or `force`) says so, as one new generation; see the module.

    Flushes what the writer has queued first. The ANN is dropped (the caller rebuilds it: `publish_ann`).
    """
    started = time.monotonic()
    writer.flush()
    store = writer.vectors
    with writer.catalog.commit_lock():
        writer.refresh()
        manifest = writer.manifest
        before = sum(shard_bytes(store, s.name) for s in manifest.shards)
        live = writer.catalog.live_rows_by_shard(manifest.generation)
        st = stats(manifest, writer.catalog, store, policy, live)
        reason = reason_to_compact(st, policy) or ("asked for" if force else None)
        small = st.small_shards > policy.max_small_shards or force
        victims = [
            s for s in manifest.shards if live.get(s.name, 0) < s.count or (small and s.count < policy.small_shard_rows)
        ]
        if force and len(victims) == 1 and live.get(victims[0].name, 0) == victims[0].count:
            victims = []  # one whole shard: nothing to gain
        if reason is None or not victims:
            files = reclaim_retired(writer.catalog, store)
            return CompactionReport(
                False, reason if reason and victims else "nothing to compact", manifest.generation,
                len(manifest.shards), len(manifest.shards), 0, 0, before, before, files, time.monotonic() - started,
            )  # fmt: skip
        generation = manifest.generation + 1
        new_shards, placement, copied = _write_new_shards(writer, victims, generation, policy)
        crash_point("compact-written")
        dropped = [s.name for s in victims]
        delete_after = time.time() + policy.grace_s
        retired = retired_shards(writer.catalog) + [
            {"name": name, "generation": generation, "delete_after": delete_after} for name in dropped
        ]
        writer.catalog.commit_compaction(generation, new_shards, placement, dropped, json.dumps(retired))
        crash_point("compact-committed")
        kept = tuple(s for s in manifest.shards if s.name not in set(dropped))
        writer.manifest = replace(
            manifest, generation=generation, shards=(*kept, *new_shards), ann=None, updated_at=now_iso()
        )
        write_manifest(writer.dir, writer.manifest)
        crash_point("compact-published")
        writer.changed = True
        files = reclaim_retired(writer.catalog, store)
    after = sum(shard_bytes(store, s.name) for s in writer.manifest.shards)
    victim_rows = sum(s.count for s in victims)
    log.info("Compacted %d shards into %d (%s)", len(victims), len(new_shards), reason)
    return CompactionReport(
        True, reason, generation, len(manifest.shards), len(writer.manifest.shards), copied,
        victim_rows - copied, before, after, files, time.monotonic() - started,
    )  # fmt: skip


_Rows = tuple[np.ndarray, np.ndarray, np.ndarray, list[bytes | None]]  # ids, v, Z, thumbnails


def _write_new_shards(
    writer: IndexWriter, victims: list[ShardInfo], generation: int, policy: CompactionPolicy
) -> tuple[list[ShardInfo], list[tuple[int, str, int]], int]:
    """Copy the live rows of `victims` into new shards (one z dtype each), with their thumbnails.

    Streams: at most one new shard's rows (`CompactionPolicy.shard_bytes`) plus one victim's are in memory.
    Victims are taken in manifest order and each one's rows in id order, so rows stay nearly in id order.
    """
    catalog = writer.catalog
    new_shards: list[ShardInfo] = []
    by_dtype: dict[str, list[ShardInfo]] = {}
    for s in victims:
        by_dtype.setdefault(s.z_dtype, []).append(s)
    for z_dtype, group in sorted(by_dtype.items()):
        buffer: list[_Rows] = []
        limit = 0
        for info in group:
            ids = catalog.live_ids_in_shards([info.name], writer.manifest.generation)
            if len(ids) == 0:
                continue
            v, z = _copy_verified(writer.vectors, info, ids)
            limit = limit or max(1, policy.shard_bytes // max(1, v[0].nbytes + z[0].nbytes))
            where = {r.id: r.row for r in catalog.shard_segments(info.name)}
            buffer.append((ids, v, z, [read_stored(writer.dir, info.name, where[int(i)]) for i in ids]))
            if sum(len(b[0]) for b in buffer) >= limit:
                written, buffer = _emit(writer, generation, z_dtype, limit, buffer, final=False)
                new_shards += written
        new_shards += _emit(writer, generation, z_dtype, limit, buffer, final=True)[0]
    placement: list[tuple[int, str, int]] = []
    for info in new_shards:
        ids = np.load(writer.vectors.path(info.name, "ids"), mmap_mode="r", allow_pickle=False)
        placement.extend((int(i), info.name, row) for row, i in enumerate(ids))
    return new_shards, placement, len(placement)


def _emit(
    writer: IndexWriter, generation: int, z_dtype: str, limit: int, buffer: list[_Rows], *, final: bool
) -> tuple[list[ShardInfo], list[_Rows]]:
    """Write the buffered rows as new shards of `limit` rows (with their thumbnails); returns them and the rows
    left for the next shard (none when `final`: the last shard takes what remains)."""
    if not buffer:
        return [], []
    ids = np.concatenate([b[0] for b in buffer])
    v = np.concatenate([b[1] for b in buffer])
    z = np.concatenate([b[2] for b in buffer])
    thumbs = [t for b in buffer for t in b[3]]
    out = []
    whole = len(ids) if final else len(ids) - len(ids) % limit
    for start in range(0, whole, limit):
        end = min(start + limit, whole)
        info = writer.vectors.write_shard(generation, ids[start:end], v[start:end], z[start:end], z_dtype=z_dtype)
        if any(t is not None for t in thumbs[start:end]):
            write_thumbnail_shard(writer.dir, info.name, thumbs[start:end])
        out.append(info)
    rest = [(ids[whole:], v[whole:], z[whole:], thumbs[whole:])] if whole < len(ids) else []
    return out, rest


def maybe_compact(writer: IndexWriter, policy: CompactionPolicy | None) -> CompactionReport | None:
    """The end-of-run hook of ``index`` (and the Ray run): compact if the policy says so (None: never).

    A damaged shard does not fail the run: it is left as it is, with a warning (``verify --repair`` fixes it).
    """
    if policy is None or not writer.manifest.shards:
        return None
    try:
        return compact(writer, policy)
    except ShardCorruptError as exc:
        log.warning("Warning: not compacting: %s", exc)
        return None
