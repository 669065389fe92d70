"""``search`` and ``similar``: ranked, time-stamped moments for a text or an example video."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ..console import echo_json, format_time, table
from ..errors import InvalidArgumentError
from .base import EXIT_PARTIAL, cli, device_option, filter_options, index_option, json_option

# -- search -----------------------------------------------------------------------------------------------


def _hits_table(hits: Sequence[Any]) -> None:
    if not any(h.match != "visual" for h in hits):
        rows = [(h.rank, f"{h.score:.4f}", f"{format_time(h.start)}-{format_time(h.end)}", h.path) for h in hits]
        table(rows, ["#", "score", "time", "path"])
        return
    # A fused search: how each moment matched, and the line that was said (score stays X-CLIP's).
    fused: list[tuple[Any, ...]] = [
        (
            h.rank,
            f"{h.score:.4f}",
            h.match,
            f"{format_time(h.start)}-{format_time(h.end)}",
            h.path + (f'\n    "{_one_line(h.cue.text)}"' if h.cue is not None else ""),
        )
        for h in hits
    ]
    table(fused, ["#", "score", "match", "time", "path"])


def _one_line(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@cli.command("search")
@click.argument("query", required=False)
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
@click.option(
    "--min-score",
    type=float,
    default=None,
    help="Leave out results scoring below this (with --concept: its probability).",
)
@click.option("--no-merge", is_flag=True, help="Report each video's best segment alone (no merged time range).")
@click.option(
    "--match",
    "match",
    type=click.Choice(["visual", "speech", "both"]),
    default=None,
    help="Match what is shown (X-CLIP), what is said (subtitles, transcripts), or both, fused "
    "[default: both when the index holds subtitles or transcripts, else visual].",
)
@click.option(
    "--concept",
    default=None,
    help="Rank by this learned concept's probability (with QUERY: fused with X-CLIP's score for QUERY).",
)
@filter_options
@device_option
@json_option
def search_cmd(
    query: str | None,
    index_dir: Path | None,
    top_k: int,
    candidates: int | None,
    no_rerank: bool,
    all_segments: bool,
    min_score: float | None,
    no_merge: bool,
    match: str | None,
    concept: str | None,
    where: Any,
    device: str | None,
    as_json: bool,
) -> int:
    """Find the moments that match QUERY (and/or a learned --concept), best first.

    One hit per video: its best segment, widened over adjacent segments that match about as well. Where the
    index holds subtitles or transcripts, a moment is also found by what is said in it: every word of QUERY in
    one line, "an exact phrase", prefix*, a OR b.

    \b
    Examples:
      xclip-search search "someone slicing bread"
      xclip-search search "red circle moving left" --top-k 3 --json
      xclip-search search "a goal" --filter "duration>=60" --path-prefix ~/Videos/football --tag soccer
      xclip-search search '"quarterly budget"' --match speech
      xclip-search search --concept blicket --top-k 5          # ranked by the concept's probability
      xclip-search search "moving left" --concept blicket      # X-CLIP's score fused with the concept
    """
    from ..index import Index

    if concept is not None:
        if match is not None:
            raise InvalidArgumentError("--match applies to text searches, not to --concept", hint="drop --match")
        return _search_concept(query, concept, index_dir, top_k, all_segments, min_score, where, device, as_json)
    if query is None:
        raise InvalidArgumentError("No query given", hint='xclip-search search "a dog catching a frisbee"')
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
            match=match,
        )
    if as_json:
        echo_json({"query": query, "results": [h.to_dict() for h in hits]})
        return 0
    if not hits:
        click.echo("No results." if where or min_score is not None else "No results (the index is empty).")
        return 0
    _hits_table(hits)
    return 0


def _search_concept(
    query: str | None,
    concept: str,
    index_dir: Path | None,
    top_k: int,
    all_segments: bool,
    min_prob: float | None,
    where: Any,
    device: str | None,
    as_json: bool,
) -> int:
    """``search --concept``: `score` stays X-CLIP's (for QUERY, or for the concept's name); `concept_prob` and,
    with a query, `fused_score` say what ranked the results."""
    from ..index import Index

    with Index.open(index_dir, device=device) as index:
        hits = index.search_concept(
            concept, query=query, top_k=top_k, per_video=not all_segments, where=where, min_prob=min_prob
        )
    if as_json:
        echo_json({"query": query, "concept": concept.strip(), "results": [h.to_dict() for h in hits]})
        return 0
    if not hits:
        click.echo("No results.")
        return 0
    rows = [
        (h.rank, f"{h.concept_prob:.2f}", f"{h.score:.4f}", f"{format_time(h.start)}-{format_time(h.end)}", h.path)
        for h in hits
    ]
    table(rows, ["#", "concept P", "x-clip score", "time", "path"])
    return 0


# -- similar ----------------------------------------------------------------------------------------------


@cli.command("similar")
@click.argument("example", required=False, type=click.Path(exists=True, path_type=Path))
@index_option()
@click.option("--video-id", type=int, default=None, help="Use this indexed video as the example instead of a file.")
@click.option("--at", type=float, default=None, help="Use the segment at this time (seconds), not the whole video.")
@click.option(
    "--segment-seconds",
    type=float,
    default=None,
    help="Window length used to find --at in an example file [default: the index's segmentation].",
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
    segment_seconds: float | None,
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

    EXAMPLE may be a folder: each video under it (walked like 'xclip-search index' does) is an example of its
    own, with its own results; files that cannot be read are listed under "failed" (exit code 3).

    \b
    Examples:
      xclip-search similar clip.mp4 --top-k 5
      xclip-search similar new-uploads/ --top-k 3 --json      # {"examples": [{"example", "results"}], "failed"}
      xclip-search similar long.mp4 --at 95 --json            # the 10 s window around 1:35
      xclip-search similar --video-id 42 --at 30 --all-segments
    """
    from ..index import Index

    if (example is None) == (video_id is None):
        raise InvalidArgumentError(
            "Pass exactly one of EXAMPLE (a video file) or --video-id",
            hint="xclip-search similar clip.mp4, or xclip-search similar --video-id 42",
        )
    from .indexing import check_segmentation_flags

    check_segmentation_flags(segment_seconds=segment_seconds)
    if segment_seconds == 0:
        raise InvalidArgumentError("Invalid --segment-seconds (0). It must be positive: --at picks one window.")
    if example is not None and example.is_dir():
        return _similar_folder(
            example,
            index_dir,
            at,
            segment_seconds,
            device,
            as_json,
            top_k,
            candidates,
            per_video=not all_segments,
            where=where,
            min_score=min_score,
            include_source=include_source,
        )
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


def _similar_folder(
    folder: Path,
    index_dir: Path | None,
    at: float | None,
    segment_seconds: float | None,
    device: str | None,
    as_json: bool,
    top_k: int,
    candidates: int | None,
    **query: Any,
) -> int:
    """Every video under `folder` as an example of its own; unreadable files are listed, not fatal."""
    from indexer.embed import embed_files
    from indexer.walk import video_files

    from ..errors import XClipSearchError
    from ..example import example_from_embedding
    from ..index import Index

    files, issues = video_files([str(folder.resolve())])
    failed = [{"path": i.path, "status": i.status, "reason": i.reason} for i in issues]
    examples: list[dict[str, Any]] = []
    with Index.open(index_dir, device=device) as index:
        encoder, _ = index._components()
        settings = _example_segmentation(index, at, segment_seconds)
        order = {path: i for i, path in enumerate(files)}
        done = []
        for item in embed_files(files, index.checkpoint, segmentation=settings, encoder=encoder) if files else ():
            if item.embeddings is None or item.extracted is None:
                failed.append({"path": item.path, "status": "failed", "reason": item.error or "unknown error"})
                continue
            spans = [(float(s.start_s), float(s.end_s)) for s in item.extracted.segments]
            try:
                ex = example_from_embedding(item.path, spans, item.embeddings.v, at=at, snapshot=index.snapshot)
            except XClipSearchError as exc:  # e.g. --at beyond this file's end: this example only
                failed.append({"path": item.path, "status": "failed", "reason": exc.message})
                continue
            hits = index.similar(ex, top_k=top_k, candidates=candidates, **query)
            done.append((order[item.path], ex, hits))
    for _, ex, hits in sorted(done, key=lambda d: d[0]):
        examples.append({"example": ex.source, "results": [h.to_dict() for h in hits]})
        if not as_json:
            click.echo(f"Like {ex.source['path']}:")
            if hits:
                _hits_table(hits)
            else:
                click.echo("No results.")
    if as_json:
        echo_json({"examples": examples, "failed": failed})
    else:
        for f in failed:
            click.echo(f"{f['status']}: {f['path']}: {f['reason']}", err=True)
        if not examples and not failed:
            click.echo("No videos found under the given folder.", err=True)
    return EXIT_PARTIAL if any(f["status"] == "failed" for f in failed) else 0


def _example_segmentation(index: Any, at: float | None, segment_seconds: float | None) -> Any:
    """How an example file is cut: as the index cut its videos (its recorded segmentation), so --at picks a
    comparable moment; the whole file is one example without --at."""
    from dataclasses import replace

    settings = index.segmentation.settings
    seconds = 0.0 if at is None else (segment_seconds if segment_seconds is not None else settings.segment_seconds)
    return replace(settings, segment_seconds=seconds)


def _embed_example(index: Any, path: Path, at: float | None, segment_seconds: float | None) -> Any:
    from indexer.embed import embed_files

    from ..errors import VideoError
    from ..example import example_from_embedding

    encoder, _ = index._components()
    settings = _example_segmentation(index, at, segment_seconds)
    absolute = os.path.abspath(path)
    item = next(iter(embed_files([absolute], index.checkpoint, segmentation=settings, encoder=encoder)))
    if item.embeddings is None or item.extracted is None:
        raise VideoError(f"Cannot read the example video {path}: {item.error or 'unknown error'}")
    spans = [(float(s.start_s), float(s.end_s)) for s in item.extracted.segments]
    return example_from_embedding(path, spans, item.embeddings.v, at=at, snapshot=index.snapshot)
