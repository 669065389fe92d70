"""``watch``: keep an index current while files appear, change, move and disappear (`indexer.watch`)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..console import echo_json
from ..defaults import default_index_dir
from .base import cli, index_option, json_option
from .indexing import check_segmentation_flags, speech_options


def watch_options(f: Any) -> Any:
    """The timing options `watch` and `serve --watch` share."""
    f = click.option(
        "--poll",
        is_flag=True,
        help="Watch by scanning every few seconds instead of inotify (network file systems are polled anyway).",
    )(f)
    f = click.option(
        "--settle",
        "settle_s",
        type=click.FloatRange(min=0),
        default=2.0,
        show_default=True,
        help="Seconds a file's size and mtime must stay unchanged before it is indexed (files being written).",
    )(f)
    return f


def print_batch(as_json: bool) -> Callable[[Any], None]:
    """One line per run: the ``index --json`` counts plus ``trigger``, ``paths`` and ``seconds`` with --json."""

    def show(result: Any) -> None:
        d = result.to_dict()
        if as_json:
            echo_json(d)
            sys.stdout.flush()
            return
        still = f", {d['still_failed']} still failed" if d["still_failed"] else ""
        if "transcribed" in d:  # --transcribe
            still += f", {d['transcribed']} transcribed, {d['transcription_failed']} transcription failed"
        click.echo(
            f"[{result.trigger}] {d['indexed']} indexed ({d['segments']} segments), {d['moved']} moved, "
            f"{d['removed']} removed, {d['unchanged']} unchanged, {d['failed']} failed, {d['skipped']} skipped"
            f"{still} in {result.seconds:.1f} s",
            err=True,
        )
        for o in result.report.failures[:20]:
            click.echo(f"  {o.status}: {o.path}: {o.reason}", err=True)
        for o in result.report.earlier[:20]:
            if o.status == "failed":
                click.echo(f"  still failed: {o.path}: {o.reason}", err=True)
        for s in result.report.speech_failures[:20]:
            click.echo(f"  transcription failed: {s.path}: {s.reason}", err=True)

    return show


def notice(text: str) -> None:
    click.echo(f"Warning: {text}", err=True)


@cli.command("watch")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@index_option()
@click.option(
    "--model",
    default=None,
    help="Model for a new index (hub id, directory or 'demo') [default: the index's model, or "
    "microsoft/xclip-base-patch32 for a new index].",
)
@click.option(
    "--segment-seconds",
    type=float,
    default=None,
    help="Longest searchable moment for a new index; 0 = one segment per whole video [default: what the index "
    "records, else 10].",
)
@watch_options
@speech_options
@json_option
def watch_cmd(
    paths: tuple[Path, ...],
    index_dir: Path | None,
    model: str | None,
    segment_seconds: float | None,
    poll: bool,
    settle_s: float,
    transcribe: bool,
    speech_model: str | None,
    as_json: bool,
) -> int:
    """Keep an index current while videos appear, change, move and disappear under PATHS (folders).

    Starts with one ordinary incremental run (what changed while nothing watched, deletions pruned), then
    indexes new and changed files once their size has stopped changing, batches bursts into one run, keeps the
    vectors of moved files and drops deleted ones. Stop with Ctrl+C; committed work is kept. A running
    'xclip-search serve' on the same index sees each batch without a restart.

    \b
    Examples:
      xclip-search watch ~/Videos
      xclip-search watch /mnt/nas/videos --index nas-index --poll --json   # one JSON line per run
      xclip-search watch ~/Lectures --transcribe        # also what is said in new videos, like index --transcribe
    """
    from indexer import IndexOptions
    from indexer.watch import Watcher, WatchSettings

    check_segmentation_flags(segment_seconds=segment_seconds)
    target = index_dir or default_index_dir()
    watcher = Watcher(
        [str(p) for p in paths],
        target,
        model=model,
        options=IndexOptions(segment_seconds=segment_seconds, transcribe=transcribe, speech_model=speech_model),
        settings=WatchSettings(settle_s=settle_s, polling=poll),
        on_batch=print_batch(as_json),
        on_notice=notice,
    )
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())  # finish the batch in flight, then stop
    try:
        if not as_json:
            click.echo(f"Watching {', '.join(str(p.resolve()) for p in paths)} -> {Path(target).resolve()}", err=True)
        watcher.run(stop)
    except KeyboardInterrupt:
        click.echo("Stopped watching. Committed work is kept.", err=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
