"""``index --ray``: the same indexing run with decoding and embedding spread over a Ray cluster.

The driver (this process) walks, classifies against the catalog and applies what needs no decoding exactly as
`pipeline.run_index` does, then runs the files to index through a Ray Data pipeline:

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
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xclip_search.checkpoint import DEFAULT_MODEL, Checkpoint, ModelIdentity, load_checkpoint
from xclip_search.errors import XClipSearchError
from xclip_search.store.catalog import FAILED, INDEXED, BatchEntry, SegmentRecord
from xclip_search.store.compaction import maybe_compact
from xclip_search.store.integrity import prepare_reembedding, recorded_model
from xclip_search.store.manifest import MANIFEST_NAME
from xclip_search.store.segmentation import Segmentation, record_segmentation, settle_segmentation
from xclip_search.store.vectors import WrittenParts
from xclip_search.store.writer import IndexWriter, check_model

from .changes import classify
from .extract import ExtractSpec, FileSummary
from .ingest import _note, _record_failure, _SegmentIds, indexed_record
from .modelspec import read_model_shape
from .pipeline import (
    FileOutcome,
    IndexOptions,
    IndexReport,
    Progress,
    _apply_plan,
    _flush_after_interrupt,
    _names_recorded_model,
    _NoProgress,
    _writer,
    segmentation_request,
    validate_options,
)
from .pool import FileDone, FileFailed
from .raystages import PATH, RESULT, DecodeStage, EmbedStage
from .tuning import resolve_resources
from .walk import FoundFile, walk

LOST_REASON = "lost with its Ray worker (see the Ray logs); not recorded, so the next run tries it again"


class RayUnavailableError(XClipSearchError):
    """``--ray`` was asked for, but Ray is not installed or the cluster cannot be reached."""


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
    opts = options or IndexOptions()
    ropts = ray_options or RayOptions()
    prog = progress or _NoProgress()
    if not paths:
        raise XClipSearchError("No paths to index", hint="Pass one or more video files or folders.")
    validate_options(opts)
    if ropts.files_per_shard < 1 or ropts.retries < 0:
        raise XClipSearchError("Invalid Ray options: files_per_shard must be at least 1 and retries at least 0.")
    index_path = Path(index_dir).expanduser().resolve()
    started = time.monotonic()
    report = IndexReport()
    roots = [os.path.abspath(os.fspath(p)) for p in paths]

    checkpoint: Checkpoint | None = None
    identity: ModelIdentity | None = None
    model_ref, revision = model or DEFAULT_MODEL, None
    if (index_path / MANIFEST_NAME).exists():
        identity = recorded_model(index_path)  # the catalog's record when the manifest is damaged
        if model is not None and not _names_recorded_model(model, identity):
            checkpoint = load_checkpoint(model, device="cpu")
            check_model(identity, checkpoint.identity, index_path)
        model_ref, revision = identity.source, identity.revision

    with contextlib.ExitStack() as stack:
        # the catalog named by --catalog (or the one the index records), as on one machine
        writer = _writer(stack, index_path, identity, opts) if identity is not None else None
        segmentation = settle_segmentation(
            writer.catalog if writer else None, segmentation_request(opts), where=f"The index at {index_path}"
        )
        rows = writer.catalog.videos_by_path() if writer is not None else {}
        if writer is not None:  # videos of damaged shards are re-embedded like changed files
            rows = prepare_reembedding(writer, rows)
        plan = classify(walk(roots), rows, roots=roots, retry_failed=opts.retry_failed, prune=opts.prune)
        prog.start(len(plan.todo))
        if checkpoint is None and (plan.todo or writer is None):
            # The driver only needs the model's identity and shape; the workers load it on their devices.
            checkpoint = load_checkpoint(model_ref, revision=revision, device="cpu")
            if identity is not None:
                check_model(identity, checkpoint.identity, index_path)
        if writer is None:
            assert checkpoint is not None
            writer = _writer(stack, index_path, checkpoint.identity, opts)
            record_segmentation(writer.catalog, segmentation)
        writer.run_id = writer.catalog.start_run(roots)
        status = "interrupted"
        try:
            _apply_plan(writer, plan, rows, report)
            if plan.todo:
                assert checkpoint is not None
                _distribute(writer, checkpoint, plan.todo, opts, ropts, report, prog, segmentation)
            writer.flush()
            report.committed_elsewhere(writer.dropped)
            maybe_compact(writer, opts.compaction_policy())
            ann = writer.manifest.ann
            if writer.manifest.shards and (ann is None or ann.generation != writer.manifest.generation):
                writer.publish_ann()
            status = "finished"
        except KeyboardInterrupt:
            _flush_after_interrupt(writer)
            raise
        finally:
            writer.catalog.finish_run(writer.run_id, status, report.to_dict())
    report.seconds = time.monotonic() - started
    return report


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RayUnavailableError(
            "--ray needs Ray, which is not installed", hint='Install it with: pip install "xclip-search[ray]"'
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


def _distribute(
    writer: IndexWriter,
    checkpoint: Checkpoint,
    todo: list[FoundFile],
    opts: IndexOptions,
    ropts: RayOptions,
    report: IndexReport,
    prog: Progress,
    segmentation: Segmentation,
) -> None:
    spec = ExtractSpec(
        num_frames=checkpoint.num_frames,
        pixels=checkpoint.pixels,
        decoders=opts.decoders,
        limits=opts.limits,
    ).with_segmentation(segmentation)
    with connected(ropts.address) as ray, _data_context(ray):
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = max(1, int(resources.get("CPU", 1)))
        embed_n = ropts.embed_workers or max(1, gpus)
        embed_n = min(embed_n, -(-len(todo) // ropts.files_per_shard))
        decode_n = ropts.decode_workers or max(1, cpus - embed_n)  # each embedding actor holds one CPU too
        decode_n = min(decode_n, len(todo))
        shape = read_model_shape(str(checkpoint.directory), None)
        res = resolve_resources(shape, on_gpu=gpus > 0, workers=1, batch_size=opts.batch_size, threads=None)

        def retries() -> dict[str, Any]:
            return {"max_restarts": -1, "max_task_retries": ropts.retries}

        identity = checkpoint.identity
        items = [{PATH: f.path} for f in todo]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(
            DecodeStage,
            fn_constructor_args=(spec.to_dict(),),
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
        committer = Committer(writer, todo, opts, report, prog)
        for row in ds.iter_rows():
            committer.take(row)
        committer.finish()


class Committer:
    """The one process that records shards in the catalog and publishes them (see the module docstring)."""

    def __init__(
        self, writer: IndexWriter, todo: list[FoundFile], opts: IndexOptions, report: IndexReport, prog: Progress
    ) -> None:
        self.writer = writer
        self.opts = opts
        self.report = report
        self.prog = prog
        self.found = {f.path: f for f in todo}
        self.seen: set[str] = set()
        self.waiting: dict[str, list[tuple[dict[str, Any], FoundFile]]] = {}
        self.ids = _SegmentIds(writer, opts.commit_every)  # the same id blocks as on one machine
        self.last_commit = time.monotonic()

    def take(self, row: dict[str, Any]) -> None:
        """One file's result from the embedding stage (in the walk's order)."""
        path = str(row[PATH])
        result = json.loads(row[RESULT])
        f = self.found[path]
        self.seen.add(path)
        if result["status"] != INDEXED:
            event = FileFailed(path, result["status"], result["reason"], result.get("hash"), result.get("warnings", 0))
            _record_failure(self.writer, f, event)
            self._outcome(FileOutcome(path, event.status, event.reason, warnings=event.warnings))
            if time.monotonic() - self.last_commit >= self.opts.commit_seconds:
                self.writer.flush()
                self.last_commit = time.monotonic()
            return
        name = result["shard"]["name"]
        files = self.waiting.setdefault(name, [])
        files.append((result, f))
        if len(files) == int(result["shard_files"]):
            self._commit(self.waiting.pop(name))

    def _commit(self, files: list[tuple[dict[str, Any], FoundFile]]) -> None:
        parts = WrittenParts.from_dict(files[0][0]["shard"])
        entries: list[BatchEntry] = []
        outcomes: list[FileOutcome] = []
        for result, f in files:
            done = FileDone(
                f.path, FileSummary.from_dict(result["summary"]), {}, result["hash"], result["warnings"], result["log"]
            )
            plans = result["plans"]
            first = self.ids.take(len(plans))
            segments = [
                SegmentRecord(
                    seq=int(p[0]),
                    start_s=float(p[3]),
                    end_s=float(p[4]),
                    frame_start=int(p[1]),
                    frame_end=int(p[2]),
                    id=first + k,
                    row=int(result["row"]) + k,
                    shot=None if len(p) < 6 or p[5] is None else int(p[5]),
                )
                for k, p in enumerate(plans)
            ]
            entries.append(BatchEntry(video=indexed_record(f, done), segments=segments))
            outcomes.append(FileOutcome(f.path, INDEXED, _note(done), len(segments), done.warnings))
        self.writer.commit_written(parts, entries)
        self.last_commit = time.monotonic()
        self.prog.segments_encoded(parts.count)
        for outcome in outcomes:
            self._outcome(outcome)

    def _outcome(self, outcome: FileOutcome) -> None:
        self.report.outcomes.append(outcome)
        self.prog.file_done(outcome)

    def finish(self) -> None:
        """Report the files that never came back (lost with their worker) or whose shard is incomplete."""
        incomplete = {f.path for files in self.waiting.values() for _, f in files}
        for path in self.found:
            if path not in self.seen or path in incomplete:
                self._outcome(FileOutcome(path, FAILED, LOST_REASON))
        self.waiting.clear()
