"""``index`` and ``failures``: building an index and accounting for every file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..console import BarProgress, echo_json, format_bytes, format_time, table
from ..defaults import default_index_dir
from ..errors import InvalidArgumentError
from .base import cli, device_option, index_option, json_option

if TYPE_CHECKING:
    from indexer.pipeline import IndexReport
    from indexer.records import FileOutcome

# -- index ------------------------------------------------------------------------------------------------

_SEGMENTATION_FLAGS = {
    "mode": "--segments",
    "segment_seconds": "--segment-seconds",
    "min_shot_seconds": "--min-shot-seconds",
    "max_segments": "--max-segments",
}


def check_segmentation_flags(**given: Any) -> None:
    """Validate segmentation options with the library's one check (`Segmentation`), field by field, so the
    one-line error names the flag at fault (the library's own message names no flag)."""
    from ..store.segmentation import Segmentation

    for field, value in given.items():
        if value is None:
            continue
        try:
            Segmentation(**{field: value})
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"{_SEGMENTATION_FLAGS[field]}: {exc}", hint=exc.hint) from exc


def speech_options(f: Any) -> Any:
    """``--transcribe`` and ``--speech-model``, shared by `index` and `watch` (both become
    `IndexOptions.transcribe` and `IndexOptions.speech_model`)."""
    f = click.option(
        "--speech-model",
        default=None,
        metavar="NAME|DIR",
        help="With --transcribe: a faster-whisper size (tiny, base, small, medium, large-v3), a hub id "
        "(Systran/faster-whisper-small, openai/whisper-small) or a local directory (CTranslate2 or "
        "save_pretrained) [default: base].",
    )(f)
    f = click.option(
        "--transcribe",
        is_flag=True,
        help="Also transcribe what is said in videos without subtitles (Whisper via faster-whisper; pip install "
        "'xclip-search[speech]'), so searches find it. Incremental: only new or changed videos are transcribed.",
    )(f)
    return f


@cli.command("index")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@index_option()
@click.option(
    "--model",
    default=None,
    help="Hub id, save_pretrained directory, or 'demo' [default: the index's "
    "model, or microsoft/xclip-base-patch32 for a new index].",
)
@click.option(
    "--segments",
    "segments_mode",
    type=click.Choice(["shots", "fixed"]),
    default=None,
    help="How videos are cut into moments: 'shots' follows detected cuts (long shots split into windows of at "
    "most --segment-seconds), 'fixed' uses consecutive windows [default: the index's recorded setting, else shots].",
)
@click.option(
    "--segment-seconds",
    type=float,
    default=None,
    help="Length (at most, with shots) of the searchable moments; 0 = one segment per whole video "
    "[default: the index's recorded setting, else 10].",
)
@click.option(
    "--min-shot-seconds",
    type=float,
    default=None,
    help="With --segments shots: shorter shots join a neighbour [default: recorded, else 1].",
)
@click.option(
    "--max-segments",
    type=int,
    default=None,
    help="Cap on segments per video (longer windows beyond it) [default: recorded, else 360].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Decode worker processes; 0 decodes in-process, without isolation [default: from the cores and model].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Segments per model call [default: 8 for small models, 16 for X-CLIP base on CPU, 32 on GPU].",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Model (torch) threads on CPU [default: from the cores and model].",
)
@click.option("--prune", is_flag=True, help="Drop indexed videos whose files disappeared under the given paths.")
@click.option("--retry-failed", is_flag=True, help="Try files that failed or were skipped before again.")
@click.option(
    "--allow-empty",
    is_flag=True,
    help="PATHS holding no video is a normal run (exit 0, nothing indexed) instead of an error: for folders "
    "that are empty on purpose (the server's re-index passes it).",
)
@click.option(
    "--follow-links",
    is_flag=True,
    help="Also follow symbolic links that lead outside PATHS (recorded, so the server can play them too).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    help="Seconds a decoder may go without progress on a file before it is killed and the file marked failed.",
)
@click.option(
    "--worker-memory",
    type=click.IntRange(min=256),
    default=2048,
    show_default=True,
    help="Address-space limit per decode worker, in MB.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=7680 * 4320,
    show_default=True,
    help="Skip videos with larger frames (width x height), before decoding.",
)
@click.option(
    "--max-duration",
    type=click.FloatRange(min=0, min_open=True),
    default=6 * 3600.0,
    show_default=True,
    help="Skip videos longer than this many seconds, before decoding.",
)
@click.option(
    "--commit-every",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Publish progress every N segments (and at least every 30 s): what an interruption can lose.",
)
@click.option("--dry-run", is_flag=True, help="Walk and probe only: show what would be indexed, with time and disk.")
@click.option(
    "--catalog",
    "catalog_url",
    default=None,
    metavar="URL",
    help="Keep the catalog in this database (postgresql://USER@HOST/DB, shared by several indexers and servers); "
    "recorded without the password [default: catalog.sqlite in the index].",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="auto",
    default=None,
    metavar="[ADDRESS]",
    help="Decode and embed on a Ray cluster (pip install 'xclip-search[ray]'): ADDRESS of its head, or none to "
    "join the cluster on this machine or start one. Videos and --index must be on a filesystem all nodes share.",
)
@click.option(
    "--ray-decoders",
    type=click.IntRange(min=1),
    default=None,
    help="Ray decode actors [default: the cluster's CPUs not held by embedding actors].",
)
@speech_options
@device_option
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16", "bfloat16"]),
    default=None,
    help="Model precision (float16/bfloat16 on CUDA only) [default: float32].",
)
@click.option(
    "--decoder",
    type=click.Choice(["decord", "pyav", "nvdec"]),
    default=None,
    help="First video decoder per file; nvdec decodes on the GPU (pip install PyNvVideoCodec). The others "
    "stay behind it as the retry path [default: decord].",
)
@json_option
def index_cmd(
    paths: tuple[Path, ...],
    index_dir: Path | None,
    model: str | None,
    segments_mode: str | None,
    segment_seconds: float | None,
    min_shot_seconds: float | None,
    max_segments: int | None,
    workers: int | None,
    batch_size: int | None,
    threads: int | None,
    prune: bool,
    retry_failed: bool,
    allow_empty: bool,
    follow_links: bool,
    timeout_s: float,
    worker_memory: int,
    max_pixels: int,
    max_duration: float,
    commit_every: int,
    dry_run: bool,
    catalog_url: str | None,
    ray_address: str | None,
    ray_decoders: int | None,
    device: str | None,
    dtype: str | None,
    decoder: str | None,
    transcribe: bool,
    speech_model: str | None,
    as_json: bool,
) -> int:
    """Index the videos in PATHS (files or folders, searched recursively).

    Re-running skips unchanged files, re-indexes changed ones, follows moved files without decoding them,
    and resumes an interrupted run. Each file is decoded in a worker process with a timeout and a memory
    limit, so a broken file costs that file only.

    Exit code 3 when any file under PATHS is failed: in this run, or still from an earlier run (unchanged
    since, not retried; the report counts them as still_failed). Skipped files (over a limit, duplicates) do
    not change the exit code; with --transcribe, a video whose sound could not be decoded makes it 3 as well.
    Exit code 1, with nothing written, when PATHS hold no video at all and nothing is to be pruned (with
    --prune, a folder emptied on purpose is pruned; with --allow-empty, such a run is a normal one).

    \b
    Examples:
      xclip-search index ~/Videos
      xclip-search index ~/Videos --prune --json        # nightly: new, changed, moved and deleted files
      xclip-search index clips/ --index my-index --model ./my-xclip-checkpoint
      xclip-search index clips/ --dry-run               # what would be indexed, time and disk estimate
      xclip-search index ~/Lectures --transcribe        # also what is said (Whisper base, on this machine)
      xclip-search index talks/ --transcribe --speech-model small   # a larger Whisper: better, slower
      xclip-search index /shared/videos --index /shared/idx --ray 10.0.0.1:6379   # on a Ray cluster
    """
    from indexer import IndexOptions, run_index
    from indexer.probe import Limits

    target = index_dir or default_index_dir()
    check_segmentation_flags(
        mode=segments_mode,
        segment_seconds=segment_seconds,
        min_shot_seconds=min_shot_seconds,
        max_segments=max_segments,
    )
    options = IndexOptions(
        segments=segments_mode,
        segment_seconds=segment_seconds,
        min_shot_seconds=min_shot_seconds,
        max_segments=max_segments,
        workers=workers,
        batch_size=batch_size,
        torch_threads=threads,
        prune=prune,
        retry_failed=retry_failed,
        allow_empty=allow_empty,
        follow_links=follow_links,
        device=device,
        dtype=dtype,
        timeout_s=timeout_s,
        memory_mb=worker_memory,
        limits=Limits(max_pixels=max_pixels, max_duration_s=max_duration),
        commit_every=commit_every,
        catalog_url=catalog_url,
        transcribe=transcribe,
        speech_model=speech_model,
    )
    if decoder is not None:
        from indexer.decoders import decoder_chain

        options.decoders = decoder_chain(decoder)
    if dry_run:
        return _dry_run([str(p) for p in paths], target, model, options, as_json)
    encoding = None
    if ray_address is not None:
        from indexer.distributed import RayEncoding, RayOptions

        encoding = RayEncoding(RayOptions(address=ray_address, decode_workers=ray_decoders))
    progress = BarProgress(enabled=not as_json)
    try:
        report = run_index(
            [str(p) for p in paths],
            target,
            model=model,
            options=options,
            progress=progress,
            encoding=encoding,
            speech_progress=progress,
        )
    finally:
        progress.close()
    if as_json:
        echo_json(report.to_dict())
    else:
        _print_report(report, Path(target).resolve(), transcribe=transcribe)
    return report.exit_code


def _print_report(report: IndexReport, target: Path, *, transcribe: bool) -> None:
    """The human report: the counts on stdout; this run's failures and those still in place on stderr."""
    d = report.counts()
    still = f", {d['still_failed']} still failed" if d["still_failed"] else ""
    still += f", {d['still_skipped']} still skipped" if d["still_skipped"] else ""
    click.echo(
        f"Indexed {d['indexed']} video(s) ({d['segments']} segments), {d['unchanged']} unchanged, "
        f"{d['moved']} moved, {d['failed']} failed, {d['skipped']} skipped, {d['removed']} removed{still} "
        f"in {report.seconds:.1f} s -> {target}"
    )
    side = report.sidecars
    if side.read or side.dropped:
        click.echo(
            f"Subtitles: {side.cues} cue(s) read from the sidecars of {side.read} video(s), {side.dropped} dropped"
        )
    for path, reason in side.failures[:20]:
        click.echo(f"  subtitles not read: {path}: {reason}", err=True)
    if transcribe:
        from indexer.transcribe import NO_AUDIO

        silent = sum(1 for o in report.speech or [] if o.status == NO_AUDIO)
        click.echo(
            f"Transcribed {d['transcribed']} video(s), {silent} without sound, {d['transcription_failed']} failed."
        )
    for s in report.speech_failures[:20]:
        click.echo(f"  transcription failed: {s.path}: {s.reason}", err=True)
    _list(report.failures, "")
    if report.earlier:
        click.echo(
            f"{len(report.earlier)} file(s) unchanged since an earlier run are still not indexed "
            "(--retry-failed tries them again):",
            err=True,
        )
        _list(report.earlier, "still ")


def _list(outcomes: list[FileOutcome], prefix: str) -> None:
    for o in outcomes[:20]:
        click.echo(f"  {prefix}{o.status}: {o.path}: {o.reason}", err=True)
    if len(outcomes) > 20:
        click.echo(f"  ... and {len(outcomes) - 20} more (xclip-search failures)", err=True)


def _dry_run(paths: list[str], target: Path, model: str | None, options: Any, as_json: bool) -> int:
    from indexer.dryrun import dry_run

    report = dry_run(paths, target, model=model, options=options)
    if as_json:
        echo_json(report.to_dict())
        return 0
    c = report.counts
    still = f", {c['still_failed']} still failed" if c["still_failed"] else ""
    still += f", {c['still_skipped']} still skipped" if c["still_skipped"] else ""
    click.echo(
        f"Would index {c['to_index']} file(s) (~{report.segments} segments); {c['unchanged']} unchanged, "
        f"{c['moved']} moved, {c['removed']} removed, {c['skipped']} skipped, {c['failed']} failed{still}."
    )
    for f in report.files:
        detail = f.get("reason") or f.get("from") or (f"{f['segments']} segment(s)" if "segments" in f else "")
        click.echo(f"  {f['action']}: {f['path']}" + (f" ({detail})" if detail else ""))
    if report.seconds is not None:
        b = report.basis
        click.echo(
            f"Estimate: {format_time(report.seconds)} and {format_bytes(report.bytes)} on this machine "
            f"({b['workers']} worker(s), {b['threads']} model thread(s); decoding "
            f"{b['decode_seconds_per_segment']:.3f} s and the model {b['model_seconds_per_segment']:.3f} s "
            "per segment, measured just now)."
        )
    return 0


# -- failures ---------------------------------------------------------------------------------------------


@cli.command("failures")
@index_option()
@json_option
def failures_cmd(index_dir: Path | None, as_json: bool) -> int:
    """List the files that failed or were skipped, with the decoder's reason.

    \b
    Examples:
      xclip-search failures
      xclip-search failures --index my-index --json
      xclip-search index ~/Videos --retry-failed      # then try them again
    """
    from ..index import Index

    with Index.open(index_dir) as index:
        rows = index.failed_videos()
    items = [{"path": r.path, "status": r.status, "reason": r.reason, "warnings": r.warnings} for r in rows]
    if as_json:
        echo_json({"failures": items})
        return 0
    if not items:
        click.echo("No failed or skipped files.")
        return 0
    table([(f["status"], f["path"], f["reason"] or "") for f in items], ["status", "path", "reason"])
    return 0
