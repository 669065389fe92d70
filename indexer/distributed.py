"""``index --ray``: the same indexing run with decoding and embedding spread over a Ray cluster.

`RayEncoding` is the run's encoding strategy: `pipeline.run_index` walks, classifies against the catalog,
applies what needs no decoding and publishes as on one machine, and the files to index go through a Ray Data
pipeline:

    files ──► DecodeStage (CPU actors) ──► EmbedStage (GPU or CPU actors; writes a shard) ──► committer (driver)

Workers write immutable vector shards (``v`` and ``Z``) straight into the index directory, which every node
must see at the same path (a shared filesystem), as it must see the videos. The one committer is the index's
single `IndexWriter`, holding the writer lock for the whole run: for each shard whose files have all arrived it
assigns segment ids, writes the shard's ids file, commits the catalog rows and publishes the manifest
(`IndexWriter.commit_written`), in the same crash-safe order as one machine; the ANN index is published at the
end. A shard never committed (the driver crashed, or its files were lost) has no catalog row, so the next
writer that opens the index deletes it.

Results come back in the walk's order (Ray Data's ``preserve_order``), and ids are handed out in that order the
same way as on one machine, so indexing a library with or without Ray gives the same catalog rows and ids.

Failures: a file that fails or is skipped is recorded with the same status and reason as on one machine (the
decode stage runs the same supervised decode process). A Ray worker that dies is restarted and its batch tried
again (`RayOptions.retries`); if that fails too, its in-flight files are reported as failed in this run's report
but recorded nowhere, so the next run tries them again, and everything else goes on. A re-run skips what was
committed, like on one machine. Ray is imported only here, and only when a run uses it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from xclip_search.checkpoint import Checkpoint
from xclip_search.errors import RayUnavailableError, XClipSearchError
from xclip_search.store.catalog import FAILED, BatchEntry
from xclip_search.store.vectors import WrittenParts
from xclip_search.store.writer import IndexWriter

from .pipeline import EncodingJob, IndexOptions, IndexReport, Progress, run_index
from .raystages import PATH, RESULT, DecodeStage, EmbedStage, FileResult
from .records import FileOutcome, SegmentIds, indexed_outcome, indexed_record, record_failure
from .tuning import resolve_resources
from .walk import FoundFile

LOST_REASON = "lost with its Ray worker (see the Ray logs); not recorded, so the next run tries it again"


@dataclass(frozen=True)
class RayOptions:
    """How a run uses the cluster; `None` means chosen from the cluster's resources."""

    address: str | None = None  # None or "auto": a cluster running on this machine, else a new local one
    decode_workers: int | None = None  # default: the cluster's CPUs not taken by the embedding actors
    embed_workers: int | None = None  # default: one per GPU, else one CPU actor
    files_per_shard: int = 16
    retries: int = 1  # times a batch is tried again on a fresh actor after its worker died
    fail_on: tuple[str, ...] = ()  # tests: file names whose embedding batch kills its worker every time


def run_index_ray(
    paths: Sequence[str | os.PathLike[str]],
    index_dir: str | os.PathLike[str],
    *,
    model: str | None = None,
    options: IndexOptions | None = None,
    ray_options: RayOptions | None = None,
    progress: Progress | None = None,
) -> IndexReport:
    """Index like `pipeline.run_index`, decoding and embedding on a Ray cluster; returns what happened."""
    encoding = RayEncoding(ray_options or RayOptions())
    return run_index(paths, index_dir, model=model, options=options, progress=progress, encoding=encoding)


@dataclass(frozen=True)
class RayEncoding:
    """Decode and embed on a Ray cluster (the `pipeline.Encoding` of ``index --ray``)."""

    options: RayOptions = RayOptions()

    def check(self) -> None:
        if self.options.files_per_shard < 1 or self.options.retries < 0:
            raise XClipSearchError("Invalid Ray options: files_per_shard must be at least 1 and retries at least 0.")
        _import_ray()

    def model_placement(self, opts: IndexOptions) -> tuple[str | None, str | None]:
        # The driver only needs the model's identity and shape; the workers load it on their devices.
        return "cpu", None

    def start(self, stack: contextlib.ExitStack, job: EncodingJob) -> _RayRun:
        ray = stack.enter_context(connected(self.options.address))
        stack.enter_context(_data_context(ray))
        return _RayRun(ray, job, self.options)


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RayUnavailableError(
            "Indexing on a Ray cluster needs Ray, which is not installed",
            argument="ray",
            hint='Install it with: pip install "xclip-search[ray]"',
        ) from exc
    return ray


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[Any]:
    """The `ray` module, connected to `address` (see `RayOptions.address`); a cluster started here stops after."""
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        if address in (None, "auto"):
            try:
                ray.init(address="auto", logging_level=logging.WARNING)
            except ConnectionError:
                ray.init(include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise RayUnavailableError(
            f"Cannot connect to the Ray cluster at {address}: {exc}",
            hint="Start it with 'ray start --head' and pass the address it prints, or omit the address.",
        ) from exc
    try:
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _data_context(ray: Any) -> Iterator[None]:
    """Ray Data settings for one run: ordered results, lost batches skipped (reported), no progress bars."""
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.max_errored_blocks, ctx.enable_progress_bars)
    log = logging.getLogger("ray.data")
    level = log.level
    ctx.execution_options.preserve_order = True
    ctx.max_errored_blocks = -1
    ctx.enable_progress_bars = False
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.max_errored_blocks, ctx.enable_progress_bars = saved
        log.setLevel(level)


@dataclass
class _RayRun:
    """The files to index and a connected cluster; the pipeline runs once the driver knows the model."""

    ray: Any
    job: EncodingJob
    ropts: RayOptions

    def encode(self, writer: IndexWriter, checkpoint: Checkpoint, progress: Progress) -> None:
        ray, todo, opts, ropts = self.ray, self.job.todo, self.job.opts, self.ropts
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = max(1, int(resources.get("CPU", 1)))
        embed_n = ropts.embed_workers or max(1, gpus)
        embed_n = min(embed_n, -(-len(todo) // ropts.files_per_shard))
        decode_n = ropts.decode_workers or max(1, cpus - embed_n)  # each embedding actor holds one CPU too
        decode_n = min(decode_n, len(todo))
        res = resolve_resources(self.job.shape, on_gpu=gpus > 0, workers=1, batch_size=opts.batch_size, threads=None)

        def retries() -> dict[str, Any]:
            return {"max_restarts": -1, "max_task_retries": ropts.retries}

        identity = checkpoint.identity
        items = [{PATH: f.path} for f in todo]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(
            DecodeStage,
            fn_constructor_args=(self.job.spec.to_dict(),),
            fn_constructor_kwargs={"timeout_s": opts.timeout_s, "memory_mb": opts.memory_mb},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=decode_n, max_tasks_in_flight_per_actor=2),
            num_cpus=1,
            ray_remote_args_fn=retries,
        )
        ds = ds.map_batches(
            EmbedStage,
            fn_constructor_args=(identity.source, identity.revision, identity.config_hash, str(writer.dir)),
            fn_constructor_kwargs={
                "batch_size": res.batch_size,
                "device": "cuda" if gpus else "cpu",
                "dtype": opts.dtype,
                "threads": opts.torch_threads,
                "z_dtype": writer.z_dtype,
                "fail_on": ropts.fail_on,
            },
            batch_size=ropts.files_per_shard,
            # One batch at a time per actor: a worker that dies takes only the files it was encoding with it.
            compute=ray.data.ActorPoolStrategy(size=embed_n, max_tasks_in_flight_per_actor=1),
            num_cpus=1,
            num_gpus=1 if gpus else 0,
            ray_remote_args_fn=retries,
        )
        committer = Committer(writer, todo, opts, progress)
        for row in ds.iter_rows():
            committer.take(row)
        committer.finish()


class Committer:
    """The one process that records shards in the catalog and publishes them (see the module docstring)."""

    def __init__(self, writer: IndexWriter, todo: list[FoundFile], opts: IndexOptions, progress: Progress) -> None:
        self.writer = writer
        self.opts = opts
        self.progress = progress
        self.found = {f.path: f for f in todo}
        self.seen: set[str] = set()
        self.waiting: dict[str, list[tuple[FileResult, FoundFile]]] = {}
        self.ids = SegmentIds(writer, opts.commit_every)  # the same id blocks as on one machine
        self.last_commit = time.monotonic()

    def take(self, row: dict[str, Any]) -> None:
        """One file's result from the embedding stage (in the walk's order)."""
        path = str(row[PATH])
        result = FileResult.from_json(row[RESULT])
        f = self.found[path]
        self.seen.add(path)
        if not result.indexed or result.shard is None:
            self.progress.file_done(record_failure(self.writer, f, result.failed(path)))
            if time.monotonic() - self.last_commit >= self.opts.commit_seconds:
                self.writer.flush()
                self.last_commit = time.monotonic()
            return
        files = self.waiting.setdefault(result.shard.name, [])
        files.append((result, f))
        if len(files) == result.shard_files:
            self._commit(result.shard, self.waiting.pop(result.shard.name))

    def _commit(self, parts: WrittenParts, files: list[tuple[FileResult, FoundFile]]) -> None:
        entries = [
            BatchEntry(
                video=indexed_record(f, result.done(f.path)),
                segments=self.ids.records(result.plans, result.row),
                cues=list(result.summary.cues) if result.summary else [],
            )
            for result, f in files
        ]
        self.writer.commit_written(parts, entries)
        self.last_commit = time.monotonic()
        self.progress.segments_encoded(parts.count)
        for e in entries:
            self.progress.file_done(indexed_outcome(e.video, len(e.segments)))

    def finish(self) -> None:
        """Report the files that never came back (lost with their worker) or whose shard is incomplete."""
        incomplete = {f.path for files in self.waiting.values() for _, f in files}
        for path in self.found:
            if path not in self.seen or path in incomplete:
                self.progress.file_done(FileOutcome(path, FAILED, LOST_REASON))
        self.waiting.clear()
