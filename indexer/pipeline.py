"""The indexing run: walk -> classify against the catalog -> decode (workers) -> encode (batched) -> commit.

A run first decides, from stat fields alone where it can, what each file needs (see `changes`): unchanged
files cost a ``stat`` and a catalog lookup, moved files a catalog update, so a re-run over an unchanged library
does not even load the model. Only new and changed files go through the decode -> encode -> commit loop
(`ingest`). Every file the walk sees ends with exactly one status in the report: indexed, unchanged, moved,
skipped (with the reason) or failed (with the decoder's message); the run exits with 3 when any failed.

How the files to index are decoded and encoded is the run's `Encoding`: `LocalEncoding` (a decode pool and
the model in this process, the default) or `distributed.RayEncoding` (a Ray cluster). Walking, change
detection, model checks, failure recording and publishing are the same for both, here.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from xclip_search.checkpoint import DEFAULT_MODEL, Checkpoint, ModelIdentity, check_dtype, load_checkpoint
from xclip_search.errors import CheckpointError, InvalidArgumentError, NoVideosError
from xclip_search.pixels import PixelConfig
from xclip_search.speech import SpeechSettings
from xclip_search.store.catalog import FAILED, INDEXED, SKIPPED, VideoRecord
from xclip_search.store.compaction import CompactionPolicy, maybe_compact
from xclip_search.store.integrity import prepare_reembedding, recorded_model
from xclip_search.store.location import resolve
from xclip_search.store.manifest import MANIFEST_NAME
from xclip_search.store.segmentation import SegmentationRequest, record_segmentation, settle_segmentation
from xclip_search.store.writer import IndexWriter, check_index_dir, check_model

from .audio import MAX_AUDIO_S
from .changes import RunPlan, classify
from .decoders import DEFAULT_DECODERS
from .extract import ExtractSpec
from .modelspec import ModelShape, read_model_shape
from .pool import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, DecodePool, PoolEvent
from .probe import Limits
from .records import FileOutcome
from .segments import Segmentation
from .sidecars import SidecarReport, sync_sidecars
from .transcribe import FAILED as SPEECH_FAILED
from .transcribe import TRANSCRIBED, SpeechOptions, SpeechOutcome, SpeechProgress, check_speech, update_speech
from .tuning import likely_gpu, resolve_resources
from .walk import VIDEO_EXTENSIONS, FoundFile, Walker

UNCHANGED, MOVED = "unchanged", "moved"
REMOVED = "removed"  # a report line (a pruned file) and the catalog status of its row alike


@dataclass
class IndexOptions:
    """Knobs of an indexing run; `None` means chosen from the machine and the model (see `tuning`)."""

    # How videos are cut into segments (`xclip_search.store.segmentation`); None: what the index records, else
    # the default (shots, at most 10 s, shots under 1 s join a neighbour, 360 per video).
    segments: str | None = None
    segment_seconds: float | None = None
    min_shot_seconds: float | None = None
    max_segments: int | None = None
    workers: int | None = None
    batch_size: int | None = None
    torch_threads: int | None = None
    commit_every: int = 256
    commit_seconds: float = 30.0
    prune: bool = False
    retry_failed: bool = False
    follow_links: bool = False  # follow symlinks leading outside the roots (`walk`'s symlink rule)
    device: str | None = None
    dtype: str | None = None
    limits: Limits = field(default_factory=Limits)
    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    decoders: tuple[str, ...] = DEFAULT_DECODERS
    # SQLAlchemy URL of the catalog (PostgreSQL for a shared index); None: the one the index records.
    catalog_url: str | None = None
    # Compaction at the end of a run (`xclip_search.store.compaction`): when dead vector rows pass this share, or
    # more shards than this are small; retired files are kept this long for readers on older generations.
    compact_dead_fraction: float = 0.2
    compact_max_small_shards: int = 16
    compact_grace_s: float = 600.0
    compact: bool = True
    # A run that finds no video under its paths (and nothing to prune) raises `NoVideosError` unless this is set:
    # the watcher sets it, since an empty watched folder is waiting for files, not a mistake.
    allow_empty: bool = False
    # Speech transcription (`transcribe`): videos without text tracks get "speech" cues from Whisper.
    transcribe: bool = False
    speech_model: str | None = None  # faster-whisper size, hub id or directory; None: speech.DEFAULT_SPEECH_MODEL

    def speech_options(self) -> SpeechOptions:
        """The transcription settings of these options (the one place they become `SpeechOptions`)."""
        device = "cuda" if (self.device or "").startswith("cuda") else "cpu"
        return SpeechOptions(
            transcribe=self.transcribe,
            model=self.speech_model,
            settings=SpeechSettings(threads=self.torch_threads, device=device),
            timeout_s=self.timeout_s,
            memory_mb=self.memory_mb,
            max_seconds=min(MAX_AUDIO_S, self.limits.max_duration_s),
            retry_failed=self.retry_failed,
        )

    def compaction_policy(self) -> CompactionPolicy | None:
        """The end-of-run compaction policy of these options (None: the run never compacts)."""
        if not self.compact:
            return None
        return CompactionPolicy(
            dead_fraction=self.compact_dead_fraction,
            max_small_shards=self.compact_max_small_shards,
            grace_s=self.compact_grace_s,
        )

    def extract_spec(self, num_frames: int, pixels: PixelConfig, segmentation: Segmentation) -> ExtractSpec:
        """What decode workers make of each file for a model with `num_frames` and `pixels`, cut by the index's
        settled `segmentation` (the one place the options become an `ExtractSpec`)."""
        return ExtractSpec(
            num_frames=num_frames, pixels=pixels, decoders=self.decoders, limits=self.limits
        ).with_segmentation(segmentation)


@dataclass
class IndexReport:
    """What a run did; `to_dict` is the ``index --json`` shape (DESIGN.md §4, plus the fields after ``segments``).

    `outcomes` hold one line per file the walk found, by what *this* run did (a file that failed earlier and is
    unchanged since is ``unchanged`` here); `earlier` lists those files again, as still failed or skipped, so a
    nightly report cannot say "0 failed" while files under its roots are still not indexed.
    """

    outcomes: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0
    earlier: list[FileOutcome] = field(default_factory=list)  # unchanged files still failed or skipped
    sidecars: SidecarReport = field(default_factory=SidecarReport)  # subtitle files beside the videos
    # With transcription asked for (``--transcribe``): the videos transcribed now (or failed); None: not asked.
    speech: list[SpeechOutcome] | None = None

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def segments(self) -> int:
        return sum(o.segments for o in self.outcomes)

    @property
    def failures(self) -> list[FileOutcome]:
        """This run's failed and skipped files."""
        return [o for o in self.outcomes if o.status in (FAILED, SKIPPED)]

    @property
    def still_failed(self) -> int:
        """Files under the roots that failed in an earlier run and were not retried (unchanged since)."""
        return sum(1 for o in self.earlier if o.status == FAILED)

    @property
    def still_skipped(self) -> int:
        return sum(1 for o in self.earlier if o.status == SKIPPED)

    @property
    def exit_code(self) -> int:
        """3 when any file under the roots is failed, in this run or still from an earlier one; else 0.

        Skipped files (over a limit, a second path to the same file, a link leading outside the roots) do not
        change it: they were refused by a rule, and re-running cannot change that (they are reported).
        """
        return 3 if self.count(FAILED) or self.still_failed or self.speech_failures else 0

    @property
    def speech_failures(self) -> list[SpeechOutcome]:
        return [o for o in self.speech or [] if o.status == SPEECH_FAILED]

    def committed_elsewhere(self, paths: Sequence[str]) -> None:
        """Report as unchanged the files this run encoded but dropped at commit time because another writer
        sharing the catalog committed them first (`IndexWriter.dropped`): the index holds them once, from the
        other run, so this run did not index them."""
        dropped = set(paths)
        if not dropped:  # the usual case: nothing to rewrite in a report of possibly millions of files
            return
        self.outcomes = [
            replace(o, status=UNCHANGED, reason="indexed by another writer", segments=0)
            if o.status == INDEXED and o.path in dropped
            else o
            for o in self.outcomes
        ]

    def counts(self) -> dict[str, Any]:
        """The report's figures (what the catalog keeps of each run)."""
        counts: dict[str, Any] = {
            "indexed": self.count(INDEXED),
            "unchanged": self.count(UNCHANGED),
            "failed": self.count(FAILED),
            "removed": self.count(REMOVED),
            "segments": self.segments,
            "moved": self.count(MOVED),
            "skipped": self.count(SKIPPED),
            "still_failed": self.still_failed,
            "still_skipped": self.still_skipped,
            "sidecars": self.sidecars.to_dict(),
        }
        if self.speech is not None:  # index --transcribe: videos transcribed now, and those whose sound failed
            counts["transcribed"] = sum(1 for o in self.speech if o.status == TRANSCRIBED)
            counts["transcription_failed"] = len(self.speech_failures)
        return counts

    @property
    def moves(self) -> list[tuple[str, str]]:
        """``(from, to)`` of every file this run found moved (its row and vectors kept, nothing decoded)."""
        return [(o.moved_from or "", o.path) for o in self.outcomes if o.status == MOVED]

    def to_dict(self) -> dict[str, Any]:
        """The ``index --json`` report: the counts, then this run's failures, the earlier ones still in place
        and the moves, each with its path."""
        return {
            **self.counts(),
            "failures": [_listed(o) for o in self.failures],
            "still_failures": [_listed(o) for o in self.earlier],
            "moves": [{"from": old, "to": new} for old, new in self.moves],
        }


def _listed(o: FileOutcome) -> dict[str, Any]:
    return {"path": o.path, "status": o.status, "reason": o.reason}


class Progress(Protocol):
    """Receives progress events; the command line draws a bar from them, the library passes none."""

    def start(self, total_files: int) -> None:
        """`total_files` files are about to be decoded and encoded."""

    def file_done(self, outcome: FileOutcome) -> None: ...

    def segments_encoded(self, count: int) -> None: ...


class _NoProgress:
    def start(self, total_files: int) -> None:
        pass

    def file_done(self, outcome: FileOutcome) -> None:
        pass

    def segments_encoded(self, count: int) -> None:
        pass


def segmentation_request(opts: IndexOptions) -> SegmentationRequest:
    """The segmentation settings `opts` names (validated; unnamed fields come from the index or the default)."""
    request = SegmentationRequest(opts.segments, opts.segment_seconds, opts.min_shot_seconds, opts.max_segments)
    request.over(Segmentation())  # validates what was given before anything runs
    return request


def validate_options(opts: IndexOptions) -> None:
    segmentation_request(opts)
    check_speech(opts.speech_options())
    if opts.batch_size is not None and opts.batch_size < 1:
        raise InvalidArgumentError(f"Invalid batch size ({opts.batch_size}). It must be at least 1.")
    if opts.commit_every < 1 or opts.commit_seconds <= 0:
        raise InvalidArgumentError("The commit interval must be at least 1 segment and more than 0 seconds.")
    if opts.timeout_s <= 0:
        raise InvalidArgumentError(f"Invalid timeout ({opts.timeout_s}). It must be more than 0 seconds.")
    if opts.memory_mb < 256:
        raise InvalidArgumentError(f"Invalid worker memory limit ({opts.memory_mb} MB). It must be at least 256 MB.")
    check_dtype(opts.dtype, opts.device)


@dataclass(frozen=True)
class EncodingJob:
    """The files a run must decode and encode, the model's shape as config.json gives it, and the settings."""

    todo: list[FoundFile]
    shape: ModelShape
    spec: ExtractSpec
    opts: IndexOptions


class EncodingRun(Protocol):
    """The files of one run being decoded (started before the model loads), waiting to be encoded."""

    def encode(self, writer: IndexWriter, checkpoint: Checkpoint, progress: Progress) -> None:
        """Encode and commit every file: record its catalog row, report it once to `progress.file_done`."""


class Encoding(Protocol):
    """How a run decodes and encodes the files it must index (`run_index` does everything else)."""

    def check(self) -> None:
        """Refuse bad settings of this strategy; runs before anything is loaded."""

    def model_placement(self, opts: IndexOptions) -> tuple[str | None, str | None]:
        """The device and dtype the model is loaded with in this process."""

    def start(self, stack: contextlib.ExitStack, job: EncodingJob) -> EncodingRun:
        """Start decoding `job.todo` (resources entered in `stack`); the model loads meanwhile."""


def run_index(
    paths: Sequence[str | os.PathLike[str]],
    index_dir: str | os.PathLike[str],
    *,
    model: str | None = None,
    options: IndexOptions | None = None,
    progress: Progress | None = None,
    encoding: Encoding | None = None,
    speech_progress: SpeechProgress | None = None,
) -> IndexReport:
    """Index the videos under `paths` into `index_dir` (created if needed) and return what happened.

    `encoding` says how segments are decoded and encoded: `LocalEncoding()` (the default) or
    `distributed.RayEncoding(...)`. `speech_progress` hears about transcription (``options.transcribe``).
    """
    opts = options or IndexOptions()
    how = encoding or LocalEncoding()
    prog = progress or _NoProgress()
    if not paths:
        raise InvalidArgumentError("No paths to index", hint="Pass one or more video files or folders.")
    index_path = Path(index_dir).expanduser().resolve()
    # Cheap checks first: nothing below loads a model before every argument is known to be usable.
    validate_options(opts)
    how.check()
    check_index_dir(index_path)
    resolve(index_path, opts.catalog_url)
    started = time.monotonic()
    report = IndexReport()
    roots = [os.path.abspath(os.fspath(p)) for p in paths]
    device, dtype = how.model_placement(opts)

    def load(ref: str | Path, revision: str | None = None) -> Checkpoint:
        return load_checkpoint(str(ref), revision=revision, device=device, dtype=dtype)

    checkpoint: Checkpoint | None = None
    identity: ModelIdentity | None = None
    model_ref, revision = model or DEFAULT_MODEL, None
    if (index_path / MANIFEST_NAME).exists():
        identity = recorded_model(index_path)  # the catalog's record when the manifest is damaged
        if model is not None and not _names_recorded_model(model, identity):
            checkpoint = load(model)
            check_model(identity, checkpoint.identity, index_path)
        model_ref, revision = identity.source, identity.revision

    with contextlib.ExitStack() as stack:
        # An existing index is locked before the walk; a new one once the model that names it is loaded.
        writer = _writer(stack, index_path, identity, opts) if identity is not None else None
        # The index's recorded segmentation, or a one-line refusal when this run asks for another (None: new).
        segmentation = settle_segmentation(
            writer.catalog if writer else None, segmentation_request(opts), where=f"The index at {index_path}"
        )
        rows = writer.catalog.videos_by_path() if writer is not None else {}
        if writer is not None:  # videos of damaged shards are re-embedded like changed files
            rows = prepare_reembedding(writer, rows)
        walker = Walker(roots, follow_links=opts.follow_links)
        plan = classify(walker, rows, roots=roots, retry_failed=opts.retry_failed, prune=opts.prune)
        refuse_empty(roots, plan, rows, opts)
        prog.start(len(plan.todo))
        run: EncodingRun | None = None
        spec: ExtractSpec | None = None
        if plan.todo:
            # Decoding starts before the model loads (torch and the weights take seconds on a CPU machine).
            shape = read_model_shape(str(checkpoint.directory if checkpoint else model_ref), revision)
            spec = opts.extract_spec(shape.num_frames, shape.pixels, segmentation)
            run = how.start(stack, EncodingJob(plan.todo, shape, spec, opts))
        if checkpoint is None and (run is not None or writer is None):
            checkpoint = load(model_ref, revision)
            if identity is not None:
                check_model(identity, checkpoint.identity, index_path)
        if writer is None:
            assert checkpoint is not None
            writer = _writer(stack, index_path, checkpoint.identity, opts)
            record_segmentation(writer.catalog, segmentation)
        writer.run_id = writer.catalog.start_run(roots + walker.outside)  # followed link targets: servable
        status = "interrupted"
        try:
            _apply_plan(writer, plan, rows, report)
            if run is not None:
                assert checkpoint is not None and spec is not None
                _check_shape(checkpoint, spec)
                run.encode(writer, checkpoint, _Reporting(report, prog))
            writer.flush()
            report.committed_elsewhere(writer.dropped)
            # Sidecar subtitles of every video the run saw: read where they were added or changed, dropped where
            # removed; the videos' frames are not touched.
            seen = [o.path for o in report.outcomes if o.status in (INDEXED, UNCHANGED, MOVED)]
            report.sidecars = sync_sidecars(writer.catalog, seen)
            maybe_compact(writer, opts.compaction_policy())
            ann = writer.manifest.ann
            if writer.manifest.shards and (ann is None or ann.generation != writer.manifest.generation):
                writer.publish_ann()
            # What was said, once what is shown is searchable (transcription is the slow part of such a run) and
            # the text tracks are known (a video with subtitles is not transcribed).
            speech = update_speech(writer.catalog, seen, opts.speech_options(), progress=speech_progress)
            report.speech = speech if opts.transcribe else None
            status = "finished"
        except KeyboardInterrupt:
            _flush_after_interrupt(writer)
            raise
        finally:
            writer.catalog.finish_run(writer.run_id, status, report.counts())
    report.seconds = time.monotonic() - started
    return report


def refuse_empty(roots: Sequence[str], plan: RunPlan, rows: dict[str, dict[str, Any]], opts: IndexOptions) -> None:
    """Raise `NoVideosError` when `plan` found no video and has nothing to prune (unless `opts.allow_empty`).

    Pruning every video of an emptied folder is a legitimate run (everything there was deleted, and ``--prune``
    asked for it); a run that would do nothing at all says so instead of reporting success or creating an
    empty index, since the usual cause is a mistyped path or a drive that is not mounted.
    """
    if plan.found_videos or plan.removed or opts.allow_empty:
        return
    where = ", ".join(roots[:3]) + (f" and {len(roots) - 3} more" if len(roots) > 3 else "")
    issues = plan.issues
    seen = f"; {len(issues)} path(s) unusable, e.g. {issues[0].path}: {issues[0].reason}" if issues else ""
    prefixes = tuple(r.rstrip(os.sep) + os.sep for r in roots)
    gone = sum(1 for p, r in rows.items() if r["status"] != REMOVED and (p in roots or p.startswith(prefixes)))
    hint = (
        f"{gone} video(s) indexed there are gone; a run with prune (index --prune) removes them from the index."
        if gone
        else f"Video files end in {', '.join(sorted(VIDEO_EXTENSIONS))}; is the path right, the drive mounted?"
    )
    raise NoVideosError(f"No video files under {where}{seen}; nothing was indexed", hint=hint)


def _check_shape(checkpoint: Checkpoint, spec: ExtractSpec) -> None:
    """Decoding started from config.json's reading of the model; the loaded model must agree with it."""
    if checkpoint.num_frames != spec.num_frames or checkpoint.pixels != spec.pixels:
        raise CheckpointError(
            f"{checkpoint.directory}: config.json and the loaded model disagree on frames or pixels",
            hint="Re-save the checkpoint with save_pretrained.",
        )


def _writer(stack: contextlib.ExitStack, index_path: Path, identity: ModelIdentity, opts: IndexOptions) -> IndexWriter:
    return stack.enter_context(IndexWriter(index_path, identity, catalog_url=opts.catalog_url))


def _flush_after_interrupt(writer: IndexWriter) -> None:
    """Keep every video that was completely encoded, unless Ctrl-C landed inside a commit.

    If the catalog already holds a generation the manifest does not name, the interrupted commit went through
    its SQL transaction; publishing it is the next writer's recovery (roll forward), and committing the same
    batch again would be wrong. Anything else that fails here is left to that recovery as well. On a shared
    catalog the flush itself rolls forward first and drops files already committed, so it always runs.
    """
    try:
        if writer.shared or writer.catalog.latest_generation() == writer.manifest.generation:
            writer.flush()
    except Exception:  # best effort on the way out; the next run recovers from whatever state this leaves
        return


def _names_recorded_model(model: str, identity: ModelIdentity) -> bool:
    """Whether `--model` names the model the index records, so loading it can wait until a file needs it.

    A nightly run passes the same --model every time; loading weights (and importing torch) just to compare
    identities would make a run over an unchanged library take seconds instead of a fraction of one. The full
    check still runs when the model is loaded.
    """
    if model == identity.source:
        return True
    path = Path(model).expanduser()
    return path.is_dir() and str(path.resolve()) == identity.source


def _apply_plan(writer: IndexWriter, plan: RunPlan, rows: dict[str, dict[str, Any]], report: IndexReport) -> None:
    """Record what needs no decoding: walk issues, moves, refreshed stamps, removals, unchanged files."""
    for issue in plan.issues:
        row = rows.get(issue.path)
        changed = row is None or (row["status"], row["reason"]) != (issue.status, issue.reason)
        if issue.is_file and changed:
            writer.record(VideoRecord(path=issue.path, size=0, mtime_ns=0, status=issue.status, reason=issue.reason))
        report.outcomes.append(FileOutcome(issue.path, issue.status, issue.reason))
    for update in plan.refreshed:
        writer.update_file(update)
    for update in plan.moved:
        writer.update_file(update)
        report.outcomes.append(FileOutcome(update.path, MOVED, f"from {update.old_path}", moved_from=update.old_path))
    writer.remove(plan.removed)
    report.outcomes.extend(FileOutcome(path, REMOVED) for path in plan.removed)
    report.outcomes.extend(FileOutcome(f.path, UNCHANGED) for f in plan.unchanged)
    report.earlier = [FileOutcome(e.path, e.status, e.reason) for e in plan.earlier]


class _Reporting:
    """The `Progress` an encoding run reports to: every file's outcome also goes into the run's report."""

    def __init__(self, report: IndexReport, progress: Progress) -> None:
        self.report = report
        self.progress = progress

    def start(self, total_files: int) -> None:
        self.progress.start(total_files)

    def file_done(self, outcome: FileOutcome) -> None:
        self.report.outcomes.append(outcome)
        self.progress.file_done(outcome)

    def segments_encoded(self, count: int) -> None:
        self.progress.segments_encoded(count)


class LocalEncoding:
    """Decode in supervised worker processes on this machine and encode with the model in this process."""

    def check(self) -> None:
        pass

    def model_placement(self, opts: IndexOptions) -> tuple[str | None, str | None]:
        return opts.device, opts.dtype

    def start(self, stack: contextlib.ExitStack, job: EncodingJob) -> _LocalRun:
        opts = job.opts
        res = resolve_resources(
            job.shape,
            on_gpu=likely_gpu(opts.device),
            workers=opts.workers,
            batch_size=opts.batch_size,
            threads=opts.torch_threads,
        )
        workers = min(res.workers, len(job.todo))
        pool = stack.enter_context(
            DecodePool(job.spec, workers, timeout_s=opts.timeout_s, memory_mb=opts.memory_mb, nice=res.worker_nice)
        )
        return _LocalRun(job, res.threads, res.batch_size, pool.start([f.path for f in job.todo]))


@dataclass
class _LocalRun:
    """The files to decode and encode: a decode pool already running, waiting for the model."""

    job: EncodingJob
    threads: int | None
    batch_size: int
    events: Iterator[PoolEvent]

    def encode(self, writer: IndexWriter, checkpoint: Checkpoint, progress: Progress) -> None:
        from .ingest import IngestSettings, ingest  # imports torch: only when something needs encoding

        job = self.job
        threads = self.threads if checkpoint.device.type == "cpu" else None
        settings = IngestSettings(
            batch_size=self.batch_size,
            commit_every=job.opts.commit_every,
            commit_seconds=job.opts.commit_seconds,
            gpu_batch=job.opts.batch_size is None,
        )
        with _torch_threads(threads):
            ingest(
                writer,
                checkpoint,
                job.spec,
                job.todo,
                self.events,
                settings,
                progress.file_done,
                progress.segments_encoded,
            )


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run the model with `n` intra-op threads for the duration of the run, then restore the setting."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
