"""The ``xclip-search`` command line: a thin shell over `xclip_search.Index` and `indexer.run_index`.

Each command parses its flags, calls one library function, and prints either a table (stdout; progress on
stderr) or, with ``--json``, exactly the JSON of DESIGN.md §4. Library errors become ``Error: ...`` plus a hint
on stderr and exit code 1; an indexing or tagging run in which some files failed exits with 3.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__
from .console import BarProgress, echo_json, format_bytes, format_time, table
from .defaults import INDEX_ENV, default_index_dir
from .errors import InvalidArgumentError, XClipSearchError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USER_ERROR = 1
EXIT_PARTIAL = 3


class _Cli(click.Group):
    """A group whose errors are one line on stderr with exit code 1 (click's own usage errors included)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                click.echo(f"Try '{exc.ctx.command_path} --help' for help.", err=True)
            code = EXIT_USER_ERROR
        except XClipSearchError as exc:
            click.echo(f"Error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"Hint: {exc.hint}", err=True)
            code = exc.exit_code
        except click.exceptions.Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
                click.echo("Interrupted. Committed work is kept; run the same command again to resume.", err=True)
            else:
                click.echo("Aborted.", err=True)
            code = 130
        except KeyboardInterrupt:
            click.echo("Interrupted. Committed work is kept; run the same command again to resume.", err=True)
            code = 130
        except BrokenPipeError:
            code = 0
        sys.exit(code if isinstance(code, int) else 0)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")(f)


def index_option(required: bool = True) -> Callable[[F], F]:
    def deco(f: F) -> F:
        return click.option(
            "--index",
            "index_dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help=f"Index directory [default: ${INDEX_ENV}, else ./xclip-index].",
        )(f)

    return deco


def device_option(f: F) -> F:
    return click.option(
        "--device",
        default=None,
        metavar="DEVICE",
        help="auto (CUDA if present), cpu, cuda or cuda:N [default: auto].",
    )(f)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="xclip-search")
def cli() -> None:
    """Index videos with X-CLIP and find moments in them by typing what happens.

    \b
    Examples:
      xclip-search index ~/Videos --model microsoft/xclip-base-patch32
      xclip-search search "a dog catching a frisbee" --top-k 5
      xclip-search tag clip.mp4 --model demo --labels "growing,shrinking,blinking"
      xclip-search info
      xclip-search serve
      xclip-search demo
    """


# -- index ------------------------------------------------------------------------------------------------


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
    "--segment-seconds",
    type=float,
    default=10.0,
    show_default=True,
    help="Length of the searchable moments; 0 = one segment per whole video.",
)
@click.option(
    "--max-segments",
    type=click.IntRange(min=1),
    default=360,
    show_default=True,
    help="Cap on segments per video (longer windows beyond it).",
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
@device_option
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16", "bfloat16"]),
    default=None,
    help="Model precision (float16/bfloat16 on CUDA only) [default: float32].",
)
@json_option
def index_cmd(
    paths: tuple[Path, ...],
    index_dir: Path | None,
    model: str | None,
    segment_seconds: float,
    max_segments: int,
    workers: int | None,
    batch_size: int | None,
    threads: int | None,
    prune: bool,
    retry_failed: bool,
    timeout_s: float,
    worker_memory: int,
    max_pixels: int,
    max_duration: float,
    commit_every: int,
    dry_run: bool,
    device: str | None,
    dtype: str | None,
    as_json: bool,
) -> int:
    """Index the videos in PATHS (files or folders, searched recursively).

    Re-running skips unchanged files, re-indexes changed ones, follows moved files without decoding them,
    and resumes an interrupted run. Each file is decoded in a worker process with a timeout and a memory
    limit, so a broken file costs that file only. Exit code 3 when some files failed.

    \b
    Examples:
      xclip-search index ~/Videos
      xclip-search index ~/Videos --prune --json        # nightly: new, changed, moved and deleted files
      xclip-search index clips/ --index my-index --model ./my-xclip-checkpoint
      xclip-search index clips/ --dry-run               # what would be indexed, time and disk estimate
    """
    from indexer import IndexOptions, run_index
    from indexer.probe import Limits

    target = index_dir or default_index_dir()
    if segment_seconds < 0:
        raise InvalidArgumentError(f"Invalid --segment-seconds ({segment_seconds}). Use 0 or a positive number.")
    options = IndexOptions(
        segment_seconds=segment_seconds,
        max_segments=max_segments,
        workers=workers,
        batch_size=batch_size,
        torch_threads=threads,
        prune=prune,
        retry_failed=retry_failed,
        device=device,
        dtype=dtype,
        timeout_s=timeout_s,
        memory_mb=worker_memory,
        limits=Limits(max_pixels=max_pixels, max_duration_s=max_duration),
        commit_every=commit_every,
    )
    if dry_run:
        return _dry_run([str(p) for p in paths], target, model, options, as_json)
    progress = BarProgress(enabled=not as_json)
    try:
        report = run_index([str(p) for p in paths], target, model=model, options=options, progress=progress)
    finally:
        progress.close()
    if as_json:
        echo_json(report.to_dict())
    else:
        d = report.to_dict()
        click.echo(
            f"Indexed {d['indexed']} video(s) ({d['segments']} segments), {d['unchanged']} unchanged, "
            f"{d['moved']} moved, {d['failed']} failed, {d['skipped']} skipped, {d['removed']} removed "
            f"in {report.seconds:.1f} s -> {Path(target).resolve()}"
        )
        for o in report.failures[:20]:
            click.echo(f"  {o.status}: {o.path}: {o.reason}", err=True)
        if len(report.failures) > 20:
            click.echo(f"  ... and {len(report.failures) - 20} more (xclip-search failures)", err=True)
        if report.known_failed:
            click.echo(
                f"  {report.known_failed} unchanged file(s) failed in an earlier run "
                "(xclip-search failures; --retry-failed tries them again)",
                err=True,
            )
    return report.exit_code


def _dry_run(paths: list[str], target: Path, model: str | None, options: Any, as_json: bool) -> int:
    from indexer.dryrun import dry_run

    report = dry_run(paths, target, model=model, options=options)
    if as_json:
        echo_json(report.to_dict())
        return 0
    c = report.counts
    click.echo(
        f"Would index {c['to_index']} file(s) (~{report.segments} segments); {c['unchanged']} unchanged, "
        f"{c['moved']} moved, {c['removed']} removed, {c['skipped']} skipped, {c['failed']} failed."
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
    from .index import Index

    with Index.open(index_dir) as index:
        rows = index.failures()
    items = [
        {"path": r["path"], "status": r["status"], "reason": r["reason"], "warnings": r.get("warnings", 0)}
        for r in rows
    ]
    if as_json:
        echo_json({"failures": items})
        return 0
    if not items:
        click.echo("No failed or skipped files.")
        return 0
    table([(f["status"], f["path"], f["reason"] or "") for f in items], ["status", "path", "reason"])
    return 0


# -- search -----------------------------------------------------------------------------------------------


def filter_options(f: F) -> F:
    """The catalog filters shared by search, similar, tag --index and export; the command receives `where`."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .filters import SearchFilter

        kwargs["where"] = SearchFilter.parse(
            kwargs.pop("filters"),
            path_prefix=kwargs.pop("path_prefixes"),
            glob=kwargs.pop("globs"),
            tags=kwargs.pop("tags"),
            indexed_after=kwargs.pop("indexed_after"),
            indexed_before=kwargs.pop("indexed_before"),
        )
        return f(*args, **kwargs)

    options = [
        click.option(
            "--filter",
            "filters",
            multiple=True,
            metavar="EXPR",
            help="Keep segments where FIELD OP VALUE holds, e.g. 'duration>=30', 'height>=720', 'start<5m' "
            "(repeatable, all must hold; fields in the README).",
        ),
        click.option(
            "--path-prefix",
            "path_prefixes",
            multiple=True,
            metavar="PATH",
            help="Only videos whose path starts with PATH (repeatable: any of them).",
        ),
        click.option(
            "--glob",
            "globs",
            multiple=True,
            metavar="PATTERN",
            help="Only videos whose path matches a shell pattern, e.g. '*/2024/*.mp4' (repeatable: any of them).",
        ),
        click.option(
            "--tag",
            "tags",
            multiple=True,
            metavar="LABEL",
            help="Only segments carrying LABEL, saved with 'tag --index DIR --save' (repeatable: all of them).",
        ),
        click.option("--indexed-after", metavar="DATE", default=None, help="Only videos indexed at/after an ISO date."),
        click.option("--indexed-before", metavar="DATE", default=None, help="Only videos indexed before an ISO date."),
    ]
    decorated: Any = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


def _hits_table(hits: Sequence[Any]) -> None:
    rows = [(h.rank, f"{h.score:.4f}", f"{format_time(h.start)}-{format_time(h.end)}", h.path) for h in hits]
    table(rows, ["#", "score", "time", "path"])


@cli.command("search")
@click.argument("query")
@index_option()
@click.option("--top-k", type=int, default=10, show_default=True, help="Number of results.")
@click.option(
    "--candidates",
    type=int,
    default=None,
    help="First-stage candidates re-ranked exactly (more = better recall, slower) [default: 100].",
)
@click.option("--no-rerank", is_flag=True, help="Rank by the first-stage cosine only (no video-specific prompts).")
@click.option("--all-segments", is_flag=True, help="List every matching segment instead of one hit per video.")
@click.option("--min-score", type=float, default=None, help="Leave out results scoring below this.")
@click.option("--no-merge", is_flag=True, help="Report each video's best segment alone (no merged time range).")
@filter_options
@device_option
@json_option
def search_cmd(
    query: str,
    index_dir: Path | None,
    top_k: int,
    candidates: int | None,
    no_rerank: bool,
    all_segments: bool,
    min_score: float | None,
    no_merge: bool,
    where: Any,
    device: str | None,
    as_json: bool,
) -> int:
    """Find the moments that match QUERY, best first.

    One hit per video: its best segment, widened over adjacent segments that match about as well.

    \b
    Examples:
      xclip-search search "someone slicing bread"
      xclip-search search "red circle moving left" --top-k 3 --json
      xclip-search search "a goal" --filter "duration>=60" --path-prefix ~/Videos/football --tag soccer
    """
    from .index import Index

    if not query.strip():
        raise InvalidArgumentError("Empty query", hint="Type what happens in the video, e.g. 'a dog catching a ball'.")
    with Index.open(index_dir, device=device) as index:
        hits = index.search(
            query,
            top_k=top_k,
            candidates=candidates,
            rerank=not no_rerank,
            per_video=not all_segments,
            where=where,
            min_score=min_score,
            merge=not no_merge,
        )
    if as_json:
        echo_json({"query": query, "results": [h.to_dict() for h in hits]})
        return 0
    if not hits:
        click.echo("No results." if where or min_score is not None else "No results (the index is empty).")
        return 0
    _hits_table(hits)
    return 0


# -- similar ----------------------------------------------------------------------------------------------


@cli.command("similar")
@click.argument("example", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@index_option()
@click.option("--video-id", type=int, default=None, help="Use this indexed video as the example instead of a file.")
@click.option("--at", type=float, default=None, help="Use the segment at this time (seconds), not the whole video.")
@click.option(
    "--segment-seconds",
    type=float,
    default=10.0,
    show_default=True,
    help="Window length used to find --at in an example file.",
)
@click.option("--top-k", type=int, default=10, show_default=True, help="Number of results.")
@click.option("--candidates", type=int, default=None, help="First-stage candidates [default: 100].")
@click.option("--all-segments", is_flag=True, help="List every matching segment instead of one hit per video.")
@click.option("--min-score", type=float, default=None, help="Leave out results below this cosine.")
@click.option("--include-source", is_flag=True, help="Keep the example's own video in the results.")
@filter_options
@device_option
@json_option
def similar_cmd(
    example: Path | None,
    index_dir: Path | None,
    video_id: int | None,
    at: float | None,
    segment_seconds: float,
    top_k: int,
    candidates: int | None,
    all_segments: bool,
    min_score: float | None,
    include_source: bool,
    where: Any,
    device: str | None,
    as_json: bool,
) -> int:
    """Find moments that look like an example video (query by example), ranked by cos(v_example, v).

    \b
    Examples:
      xclip-search similar clip.mp4 --top-k 5
      xclip-search similar long.mp4 --at 95 --json            # the 10 s window around 1:35
      xclip-search similar --video-id 42 --at 30 --all-segments
    """
    from .index import Index

    if (example is None) == (video_id is None):
        raise InvalidArgumentError(
            "Pass exactly one of EXAMPLE (a video file) or --video-id",
            hint="xclip-search similar clip.mp4, or xclip-search similar --video-id 42",
        )
    if segment_seconds <= 0:
        raise InvalidArgumentError(f"Invalid --segment-seconds ({segment_seconds}). It must be positive.")
    with Index.open(index_dir, device=device) as index:
        if video_id is not None:
            ex = index.example(video_id, at=at)
        else:
            ex = _embed_example(index, example, at, segment_seconds)  # type: ignore[arg-type]
        hits = index.similar(
            ex,
            top_k=top_k,
            candidates=candidates,
            per_video=not all_segments,
            where=where,
            min_score=min_score,
            include_source=include_source,
        )
    if as_json:
        echo_json({"example": ex.source, "results": [h.to_dict() for h in hits]})
        return 0
    if not hits:
        click.echo("No results.")
        return 0
    _hits_table(hits)
    return 0


def _embed_example(index: Any, path: Path, at: float | None, segment_seconds: float) -> Any:
    from indexer.embed import embed_files

    from .errors import VideoError
    from .example import example_from_embedding

    encoder, _ = index._components()
    seconds = 0.0 if at is None else segment_seconds
    absolute = os.path.abspath(path)
    item = next(iter(embed_files([absolute], index.checkpoint, segment_seconds=seconds, encoder=encoder)))
    if item.embeddings is None or item.extracted is None:
        raise VideoError(f"Cannot read the example video {path}: {item.error or 'unknown error'}")
    spans = [(float(s.start_s), float(s.end_s)) for s in item.extracted.segments]
    return example_from_embedding(path, spans, item.embeddings.v, at=at, snapshot=index.snapshot)


# -- tag --------------------------------------------------------------------------------------------------


@cli.command("tag")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", default=None, help="Tag with this model (hub id, directory or 'demo').")
@click.option(
    "--index",
    "index_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Tag with this index's model; without PATHS, tag every indexed segment.",
)
@click.option("--labels", default=None, help='Comma-separated labels, e.g. "running,cooking,playing guitar".')
@click.option(
    "--labels-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A file with one label per line.",
)
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="Labels shown per segment.")
@click.option("--min-prob", type=click.FloatRange(0, 1), default=None, help="Keep labels with at least this prob.")
@click.option(
    "--segment-seconds",
    type=float,
    default=10.0,
    show_default=True,
    help="Segment length for PATHS; 0 = whole video.",
)
@click.option("--save", is_flag=True, help="With --index and no PATHS: store the labels kept, for search --tag.")
@filter_options
@device_option
@json_option
def tag_cmd(
    paths: tuple[Path, ...],
    model: str | None,
    index_dir: Path | None,
    labels: str | None,
    labels_file: Path | None,
    top: int,
    min_prob: float | None,
    segment_seconds: float,
    save: bool,
    where: Any,
    device: str | None,
    as_json: bool,
) -> int:
    """Score any list of labels against videos (open vocabulary).

    \b
    Examples:
      xclip-search tag new.mp4 --model demo --labels "moving left,moving right,growing"
      xclip-search tag a.mp4 b.mkv --index my-index --labels-file labels.txt --top 3 --json
      xclip-search tag --index my-index --labels "cooking,sports" --min-prob 0.5 --save   # every indexed segment
    """
    from .tagging import parse_labels

    if (model is None) == (index_dir is None):
        raise InvalidArgumentError(
            "Pass exactly one of --model or --index",
            hint="--model M tags with a checkpoint; --index DIR uses the model that built that index.",
        )
    label_list = parse_labels(labels, labels_file)
    if segment_seconds < 0:
        raise InvalidArgumentError(f"Invalid --segment-seconds ({segment_seconds}). Use 0 or a positive number.")
    if not paths and index_dir is None:
        raise InvalidArgumentError("No videos to tag", hint="Pass video files, or --index DIR to tag a whole index.")
    if paths and (save or where):
        raise InvalidArgumentError(
            "--save and filters apply to a whole index", hint="Drop the PATHS to tag the indexed segments."
        )
    if not paths:
        return _tag_index(index_dir, label_list, top, min_prob, save, where, device, as_json)  # type: ignore[arg-type]
    results, failed = _tag_files(paths, model, index_dir, label_list, top, min_prob, segment_seconds, device)
    if as_json:
        echo_json({"results": results, "failed": failed})
    else:
        for r in results:
            _print_tags(r)
        for f in failed:
            click.echo(f"failed: {f['path']}: {f['reason']}", err=True)
    return EXIT_PARTIAL if failed else 0


def _print_tags(r: dict[str, Any]) -> None:
    shown = ", ".join(f"{x['label']} {x['prob']:.0%}" for x in r["labels"])
    click.echo(f"{r['path']}  [{format_time(r['start'])}-{format_time(r['end'])}]  {shown}")


def _tag_files(
    paths: Sequence[Path],
    model: str | None,
    index_dir: Path | None,
    labels: list[str],
    top: int,
    min_prob: float | None,
    segment_seconds: float,
    device: str | None,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    from indexer.embed import embed_files

    from .checkpoint import load_checkpoint
    from .encoder import XClipEncoder
    from .index import Index
    from .prompting import PromptScorer
    from .tagging import Tagger, tags_to_json

    index = None
    if index_dir is not None:
        index = Index.open(index_dir, device=device)
        checkpoint = index.checkpoint
    else:
        checkpoint = load_checkpoint(model or "", device=device)
    encoder = XClipEncoder(checkpoint)
    tagger = Tagger(encoder, PromptScorer(checkpoint.model))
    results: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    order = {str(p.resolve()): i for i, p in enumerate(paths)}
    done = []
    for item in embed_files(list(order), checkpoint, segment_seconds=segment_seconds, encoder=encoder):
        if item.embeddings is None or item.extracted is None:
            failed.append({"path": item.path, "reason": item.error or "unknown error"})
            continue
        tags = tagger.tag(item.embeddings.v, item.embeddings.z, labels, top=top, min_prob=min_prob)
        spans = [(s.start_s, s.end_s) for s in item.extracted.segments]
        done.append((order[item.path], tags_to_json(item.path, spans, tags)))
    for _, rows in sorted(done, key=lambda d: d[0]):
        results.extend(rows)
    if index is not None:
        index.close()
    return results, failed


def _tag_index(
    index_dir: Path,
    labels: list[str],
    top: int,
    min_prob: float | None,
    save: bool,
    where: Any,
    device: str | None,
    as_json: bool,
) -> int:
    """Tag every indexed segment, streaming results (the JSON is written piece by piece: bounded memory)."""
    import json

    from .index import Index

    with Index.open(index_dir, device=device) as index:
        total = index.catalog.live_segment_count(index.generation)
        bar = None
        if not as_json:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="seg", file=sys.stderr, dynamic_ncols=True, desc="Tagging", disable=None)
        stream = index.tag_index(
            labels,
            top=top,
            min_prob=min_prob,
            where=where,
            save=save,
            on_batch=(lambda done: bar.update(len(done))) if bar is not None else None,
        )
        try:
            if as_json:
                out = sys.stdout
                out.write('{"results": [')
                for i, item in enumerate(stream):
                    out.write(("," if i else "") + json.dumps(item.to_dict(), ensure_ascii=False))
                out.write('], "failed": []}\n')
            else:
                for item in stream:
                    _print_tags(item.to_dict())
        finally:
            if bar is not None:
                bar.close()
    if save and not as_json:
        click.echo(f"Saved tags for {total if not where else 'the filtered'} segment(s) in {index_dir}.", err=True)
    return 0


# -- reindex ----------------------------------------------------------------------------------------------


@cli.command("reindex")
@index_option()
@click.option(
    "--ann",
    "ann_kind",
    type=click.Choice(["auto", "flat", "ivfpq", "hnsw"]),
    default=None,
    help="ANN index kind [default: the recorded choice, else auto: flat up to 25k segments, else IVF-PQ].",
)
@click.option(
    "--ann-memory",
    default=None,
    metavar="SIZE",
    help="Memory budget of the ANN index, e.g. 512MB or 4GB [default: the recorded one, else 1GB].",
)
@json_option
def reindex_cmd(index_dir: Path | None, ann_kind: str | None, ann_memory: str | None, as_json: bool) -> int:
    """Rebuild the ANN index from the stored vectors (after damage, or to change its kind or memory budget).

    The choice is recorded: later 'index' runs rebuild with the same kind and budget.

    \b
    Examples:
      xclip-search reindex
      xclip-search reindex --index my-index --ann ivfpq --ann-memory 256MB --json
    """
    from .store import ann as ann_store
    from .store.manifest import read_manifest
    from .store.writer import IndexWriter

    target = (index_dir or default_index_dir()).expanduser().resolve()
    identity = read_manifest(target).model
    budget = ann_store.parse_size(ann_memory) if ann_memory is not None else None
    with IndexWriter(target, identity) as writer:
        if ann_kind is not None or budget is not None:
            kind, recorded_budget = writer.ann_policy()
            writer.set_ann_policy(ann_kind or kind, budget or recorded_budget)
        info = writer.publish_ann(force=True)
    assert info is not None
    size = (target / info.file).stat().st_size
    data: dict[str, Any] = {
        "index": str(target),
        "ann": {
            "type": info.kind,
            "count": info.count,
            "generation": info.generation,
            "bytes": size,
            "memory_bytes": int(info.params.get("memory_bytes", size)),
            "params": {k: v for k, v in info.params.items() if k not in ("memory_bytes", "reason")},
            "reason": info.params.get("reason"),
        },
    }
    if as_json:
        echo_json(data)
    else:
        click.echo(f"Rebuilt the ANN index of {target}: {_ann_line(data['ann'])}")
    return 0


def _ann_line(ann: dict[str, Any] | None) -> str:
    if ann is None:
        return "none yet"
    p = ann.get("params", {})
    detail = {
        "ivfpq": f"IVF{p.get('nlist')},PQ{p.get('m')}, nprobe {p.get('nprobe')}, refine x{p.get('refine')}",
        "hnsw": f"HNSW{p.get('M')}, efSearch {p.get('efSearch')}",
    }.get(ann["type"], "exact")
    return (
        f"{ann['type']} ({detail}), {ann['count']} vectors, {format_bytes(ann['bytes'])} on disk, "
        f"~{format_bytes(ann.get('memory_bytes', ann['bytes']))} in memory"
    )


# -- export -----------------------------------------------------------------------------------------------


@cli.command("export")
@index_option()
@click.option(
    "--parquet",
    "parquet_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="New directory for the Parquet files (segments, videos, contexts, tags).",
)
@click.option("--no-z", is_flag=True, help="Leave out the prompt contexts Z (contexts.parquet, ~98% of the bytes).")
@filter_options
@json_option
def export_cmd(index_dir: Path | None, parquet_dir: Path, no_z: bool, where: Any, as_json: bool) -> int:
    """Export segments, metadata and embeddings as Parquet for DuckDB, pandas or Spark.

    \b
    Examples:
      xclip-search export --parquet out/
      xclip-search export --index my-index --parquet out/ --no-z --filter "duration>=60" --json
    """
    from .index import Index

    with Index.open(index_dir) as index:
        report = index.export_parquet(parquet_dir, include_z=not no_z, where=where)
    if as_json:
        echo_json(report.to_dict())
    else:
        d = report.to_dict()
        click.echo(
            f"Exported {d['segments']} segment(s) of {d['videos']} video(s) to {d['directory']} "
            f"({format_bytes(d['bytes'])}: {', '.join(sorted(d['files']))})"
        )
    return 0


# -- info -------------------------------------------------------------------------------------------------


@cli.command("info")
@index_option()
@click.option("--failures", is_flag=True, help="List the files that failed or were skipped, with reasons.")
@json_option
def info_cmd(index_dir: Path | None, failures: bool, as_json: bool) -> int:
    """Show an index's counts, model, ANN type and sizes.

    \b
    Examples:
      xclip-search info
      xclip-search info --index my-index --failures --json
    """
    from .index import Index

    with Index.open(index_dir) as index:
        data = index.info()
        fails = index.failures() if failures else None
    if fails is not None:
        data["failures"] = [{"path": f["path"], "status": f["status"], "reason": f["reason"]} for f in fails]
    if as_json:
        echo_json(data)
        return 0
    model = data["model"]
    rev = f" @ {model['revision'][:12]}" if model.get("revision") else ""
    ann = data["ann"]
    lines = [
        ("index", data["index"]),
        (
            "model",
            f"{model['source']}{rev} ({model['num_frames']} frames, {model['image_size']} px, "
            f"D={model['embed_dim']}, N={model['num_tokens']})",
        ),
        ("videos", ", ".join(f"{v} {k}" for k, v in data["videos"].items())),
        ("segments", data["segments"]),
        ("ANN", _ann_line(ann)),
        (
            "disk",
            f"{format_bytes(data['bytes']['total'])} (vectors {format_bytes(data['bytes']['vectors'])}, "
            f"catalog {format_bytes(data['bytes']['catalog'])})",
        ),
        ("generation", data["generation"]),
        ("updated", data["updated_at"]),
    ]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        click.echo(f"{key.ljust(width)}  {value}")
    if fails is not None:
        click.echo(f"\n{len(fails)} failed or skipped file(s):")
        for f in fails:
            click.echo(f"  {f['status']}: {f['path']}: {f['reason']}")
    return 0


# -- serve ------------------------------------------------------------------------------------------------


@cli.command("serve")
@index_option()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but localhost serves other machines (set a --token then).",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port; 0 picks a free one."
)
@click.option(
    "--token",
    default=None,
    envvar="XCLIP_SEARCH_TOKEN",
    show_envvar=True,
    help="Bearer token required for write operations (saving tags, re-indexing) [default: $XCLIP_SEARCH_TOKEN].",
)
@device_option
@json_option
def serve_cmd(
    index_dir: Path | None, host: str, port: int, token: str | None, device: str | None, as_json: bool
) -> int:
    """Open a web page (and HTTP API) to search, watch and tag an index.

    The page shows results as thumbnails, plays each video from the matching moment, tags a video with any
    labels and lists the index's counts and failures. The API is described at /openapi.json and /docs.
    Searches always see a complete published index, also while 'xclip-search index' adds videos.

    \b
    Examples:
      xclip-search serve                                  # then open http://127.0.0.1:8765/
      xclip-search serve --index my-index --port 9000
      xclip-search serve --host 0.0.0.0 --token "$(openssl rand -hex 16)"
    """
    try:
        from .serve.app import ServeSettings
        from .serve.runner import run_server
    except ImportError as exc:
        from .errors import DependencyError

        raise DependencyError(
            f"The web server needs extra packages ({exc.name} is missing)",
            hint="pip install 'xclip-search[serve]'",
        ) from exc
    from .serve.security import is_loopback

    settings = ServeSettings(
        index_dir=index_dir or default_index_dir(), host=host, port=port, token=token, device=device
    )

    def ready(url: str) -> None:
        if as_json:
            echo_json({"url": url, "index": str(Path(settings.index_dir).resolve()), "token": bool(token)})
            sys.stdout.flush()
        else:
            click.echo(f"Serving {Path(settings.index_dir).resolve()} at {url}  (Ctrl+C to stop)", err=True)
            if not is_loopback(host) and not token:
                click.echo("Warning: listening beyond localhost without --token; write operations are off.", err=True)

    run_server(settings, on_ready=ready)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cli.main(args=list(argv) if argv is not None else None, prog_name="xclip-search")


if __name__ == "__main__":
    main()
