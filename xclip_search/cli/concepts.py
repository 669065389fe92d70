"""``learn``, ``concepts`` and ``forget``: labels taught by a few examples (see `xclip_search.learning`)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ..console import echo_json, table
from ..errors import InvalidArgumentError, VideoError
from .base import cli, device_option, index_option, json_option

_RANGE = re.compile(r"^(?P<start>\d+(?:\.\d+)?)?-(?P<end>\d+(?:\.\d+)?)?$")


def parse_example(text: str) -> tuple[str, float | None, float | None]:
    """``PATH[@START-END]`` (seconds; either end may be left out) as (absolute path, start, end)."""
    path, start, end = text, None, None
    if "@" in text:
        head, _, tail = text.rpartition("@")
        match = _RANGE.match(tail)
        if match and head:
            path = head
            start = float(match["start"]) if match["start"] else None
            end = float(match["end"]) if match["end"] else None
            if start is not None and end is not None and end <= start:
                raise InvalidArgumentError(f"Invalid range in {text!r}: the end must come after the start.")
    if not os.path.exists(os.path.expanduser(path)):
        raise InvalidArgumentError(
            f"No such file: {path}", hint="An example is PATH or PATH@START-END (seconds), e.g. clip.mp4@12-20."
        )
    return os.path.abspath(os.path.expanduser(path)), start, end


def _moments(index: Any, specs: Sequence[str]) -> list[Any]:
    """Examples as moments: indexed files read from the index, others embedded as the index would."""
    parsed = [parse_example(s) for s in specs]
    out: list[Any] = []
    outside: list[tuple[str, float | None, float | None]] = []
    for path, start, end in parsed:
        found = index.moments_at(path, start, end)
        if found is not None:
            out.append(found)
        else:
            outside.append((path, start, end))
    if outside:
        from indexer.embed import embed_files

        encoder, _ = index._components()
        embedded = {
            item.path: item
            for item in embed_files(
                sorted({p for p, _, _ in outside}),
                index.checkpoint,
                segmentation=index.segmentation.settings,
                encoder=encoder,
            )
        }
        for path, start, end in outside:
            item = embedded.get(path)
            if item is None or item.embeddings is None or item.extracted is None:
                reason = item.error if item is not None else "not a video"
                raise VideoError(f"Cannot read the example video {path}: {reason or 'unknown error'}")
            spans = [(float(s.start_s), float(s.end_s)) for s in item.extracted.segments]
            out.append(index.moments_of_embedding(path, spans, item.embeddings.v, item.embeddings.z, start, end))
    return out


@cli.command("learn")
@click.argument("name")
@index_option()
@click.option("--example", "examples", multiple=True, help="A positive example: PATH or PATH@START-END (seconds).")
@click.option("--example-segment", "example_segments", multiple=True, type=int, help="An indexed segment id.")
@click.option("--negative", "negatives", multiple=True, help="A negative example: PATH or PATH@START-END.")
@click.option("--negative-segment", "negative_segments", multiple=True, type=int, help="An indexed segment id.")
@click.option("--text", default=None, help="Text X-CLIP may know for this concept [default: NAME].")
@device_option
@json_option
def learn_cmd(
    name: str,
    index_dir: Path | None,
    examples: tuple[str, ...],
    example_segments: tuple[int, ...],
    negatives: tuple[str, ...],
    negative_segments: tuple[int, ...],
    text: str | None,
    device: str | None,
    as_json: bool,
) -> int:
    """Learn (or update) concept NAME from a few examples; a label naming it is then scored by it.

    Indexed moments are read from the index (nothing is decoded); other files are embedded as the index would.
    Negatives default to a sample of the index. When X-CLIP knows NAME (or --text), its score is an input.

    \b
    Examples:
      xclip-search learn "jam at station 3" --example cam3.mp4@120-130 --example cam3.mp4@400-410
      xclip-search learn blicket --example-segment 812 --example-segment 977 --negative other.mp4 --json
      xclip-search tag --index my-index --labels "blicket,cooking"      # blicket: the concept's probability
    """
    from ..concepts import check_name
    from ..index import Index

    check_name(name)
    if not examples and not example_segments:
        raise InvalidArgumentError(
            "No examples given", hint="Pass --example PATH[@START-END] or --example-segment ID (one or more)."
        )
    for spec in (*examples, *negatives):
        parse_example(spec)  # fail on a bad path before the model loads
    with Index.open(index_dir, device=device) as index:
        pos = _moments(index, examples)
        if example_segments:
            pos.append(index.moments_of_segments(list(example_segments)))
        neg = _moments(index, negatives)
        if negative_segments:
            neg.append(index.moments_of_segments(list(negative_segments)))
        learned = index.learn(name, pos, neg, text=text)
    summary = learned.row.summary()
    if learned.report is not None:
        summary["text_separation"] = learned.report.text_separation
    if as_json:
        echo_json({"learned": summary})
        return 0
    acc = learned.row.held_out_accuracy
    click.echo(
        f"Learned {learned.row.name!r} from {learned.row.positives} example segment(s) and "
        f"{learned.row.negatives} negatives"
        + (f"; held-out accuracy {acc:.0%}" if acc is not None else " (one example: no held-out accuracy)")
        + (f"; X-CLIP's score for {learned.row.text!r} is an input." if learned.row.text else ".")
    )
    return 0


@cli.command("concepts")
@index_option()
@json_option
def concepts_cmd(index_dir: Path | None, as_json: bool) -> int:
    """List the concepts learned on an index (examples, when learned, held-out accuracy).

    \b
    Examples:
      xclip-search concepts
      xclip-search concepts --index my-index --json
    """
    from ..index import Index

    with Index.open(index_dir) as index:
        rows = index.concepts()
    if as_json:
        echo_json({"concepts": [r.summary() for r in rows]})
        return 0
    if not rows:
        click.echo("No concepts. Teach one: xclip-search learn NAME --example PATH@START-END")
        return 0
    table(
        [
            (
                r.name,
                len([e for e in r.examples if not e.startswith("not ")]),
                r.positives,
                "-" if r.held_out_accuracy is None else f"{r.held_out_accuracy:.0%}",
                r.learned_at[:19],
                r.text or "",
            )
            for r in rows
        ],
        ["name", "examples", "segments", "held-out acc.", "learned", "text input"],
    )
    return 0


@cli.command("forget")
@click.argument("name")
@index_option()
@json_option
def forget_cmd(name: str, index_dir: Path | None, as_json: bool) -> int:
    """Remove the learned concept NAME (the label is then X-CLIP's zero-shot again).

    \b
    Examples:
      xclip-search forget blicket
      xclip-search forget blicket --index my-index --json
    """
    from ..index import Index

    with Index.open(index_dir) as index:
        index.forget(name)
    if as_json:
        echo_json({"forgotten": name.strip()})
    else:
        click.echo(f"Forgot {name.strip()!r}.")
    return 0
