"""``tag``: open-vocabulary labels for new videos or every indexed segment."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ..console import echo_json, format_time
from ..errors import InvalidArgumentError
from .base import EXIT_PARTIAL, cli, device_option, filter_options, json_option

# -- tag --------------------------------------------------------------------------------------------------


@cli.command("tag")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
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
    default=None,
    help="Segment length (at most, within shots) for PATHS; 0 = whole video [default: with --index, the index's "
    "segmentation; else shots of at most 10 s].",
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
    segment_seconds: float | None,
    save: bool,
    where: Any,
    device: str | None,
    as_json: bool,
) -> int:
    """Score any list of labels against videos (open vocabulary).

    PATHS are files or folders, walked like 'xclip-search index' does (same extensions and skip rules); a file
    that cannot be read is listed under "failed" (exit code 3) and the others are still tagged.

    \b
    Examples:
      xclip-search tag new.mp4 --model demo --labels "moving left,moving right,growing"
      xclip-search tag new-uploads/ --model demo --labels "cooking,sports" --json
      xclip-search tag a.mp4 b.mkv --index my-index --labels-file labels.txt --top 3 --json
      xclip-search tag --index my-index --labels "cooking,sports" --min-prob 0.5 --save   # every indexed segment
    """
    from ..tagging import parse_labels

    if (model is None) == (index_dir is None):
        raise InvalidArgumentError(
            "Pass exactly one of --model or --index",
            hint="--model M tags with a checkpoint; --index DIR uses the model that built that index.",
        )
    label_list = parse_labels(labels, labels_file)
    from .indexing import check_segmentation_flags

    check_segmentation_flags(segment_seconds=segment_seconds)  # the one validation, before any model loads
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
            click.echo(f"{f['status']}: {f['path']}: {f['reason']}", err=True)
        if not results and not failed:
            click.echo("No videos found under the given paths.", err=True)
    return EXIT_PARTIAL if any(f["status"] == "failed" for f in failed) else 0


def _print_tags(r: dict[str, Any]) -> None:
    shown = ", ".join(
        f"{x['label']} {x['prob']:.0%}{' (concept)' if x.get('scored_by') == 'concept' else ''}" for x in r["labels"]
    )
    click.echo(f"{r['path']}  [{format_time(r['start'])}-{format_time(r['end'])}]  {shown}")


def _tag_files(
    paths: Sequence[Path],
    model: str | None,
    index_dir: Path | None,
    labels: list[str],
    top: int,
    min_prob: float | None,
    segment_seconds: float | None,
    device: str | None,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    from dataclasses import replace

    from indexer.embed import embed_files
    from indexer.walk import video_files

    from ..checkpoint import load_checkpoint
    from ..encoder import XClipEncoder
    from ..index import Index
    from ..prompting import PromptScorer
    from ..store.segmentation import Segmentation
    from ..tagging import Tagger, tags_to_json

    index = None
    settings = Segmentation()
    if index_dir is not None:
        index = Index.open(index_dir, device=device)
        checkpoint = index.checkpoint
        settings = index.segmentation.settings  # cut new files as the index cut its own
    else:
        checkpoint = load_checkpoint(model or "", device=device)
    if segment_seconds is not None:
        settings = replace(settings, segment_seconds=segment_seconds)
    if index is not None:
        encoder, scorer = index._components()
    else:
        encoder, scorer = XClipEncoder(checkpoint), PromptScorer(checkpoint.model)
    tagger = Tagger(encoder, scorer)
    results: list[dict[str, Any]] = []
    files, issues = video_files([str(p.resolve()) for p in paths])
    failed = [{"path": i.path, "status": i.status, "reason": i.reason} for i in issues]
    order = {path: i for i, path in enumerate(files)}
    done = []
    for item in embed_files(list(order), checkpoint, segmentation=settings, encoder=encoder) if files else ():
        if item.embeddings is None or item.extracted is None:
            failed.append({"path": item.path, "status": "failed", "reason": item.error or "unknown error"})
            continue
        if index is not None:  # labels naming the index's learned concepts are scored by them
            tags = index.tag_embeddings(item.embeddings.v, item.embeddings.z, labels, top=top, min_prob=min_prob)
        else:
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

    from ..index import Index

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
