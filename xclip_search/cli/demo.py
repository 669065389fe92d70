"""``xclip-search demo``: the command-line face of `xclip_search.demo.run` (the README's "run the main job")."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import click

from ..console import BarProgress, echo_json, format_time
from .base import cli

DEFAULT_DIR = "xclip-search-demo"


@cli.command("demo")
@click.option(
    "--dir",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help="Where the generated library and its index go (reused by a second run).",
)
@click.option("--model", default="demo", show_default=True, help="Checkpoint to index with (hub id, directory, demo).")
@click.option("--top-k", type=click.IntRange(1, 20), default=3, show_default=True, help="Results per search.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1, ... [default: cuda if available, else cpu]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def demo_cmd(out_dir: Path, model: str, top_k: int, device: str | None, as_json: bool) -> int:
    """Run the whole product offline on generated clips, with the bundled demonstration model.

    Generates a seeded library of short captioned clips and longer videos made of several scenes, indexes it,
    runs example searches (results are time ranges, shown next to what the clip really shows) and tags new
    clips with the seven motion words, zero-shot. The demonstration model knows only this synthetic world of
    coloured circles, squares and triangles that move, grow, shrink and blink; it is not a general model.

    \b
    Examples:
      xclip-search demo
      xclip-search demo --json > demo.json
      xclip-search search "yellow triangle moving up" --index xclip-search-demo/index   # afterwards
      xclip-search serve --index xclip-search-demo/index                                 # and in a browser
    """
    from ..demo.run import DemoOptions, run_demo

    opts = DemoOptions(out_dir=out_dir, model=model, top_k=top_k, device=device)
    say = None if as_json else (lambda message: click.echo(message, err=True))
    progress = BarProgress(enabled=not as_json)
    try:
        report = run_demo(opts, progress=progress, say=say)
    finally:
        progress.close()
    if as_json:
        echo_json(report.to_dict())
        return 0
    _print_report(report.to_dict())
    return 0


def _marks() -> tuple[str, str]:
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower()
    return ("✓", "✗") if "utf" in encoding else ("+", "x")


def _print_report(d: dict[str, Any]) -> None:
    from ..demo.run import GROUND_TRUTH_FILE

    yes, no = _marks()
    n = d["indexed"]
    if n["indexed"]:
        done = f"Indexed {n['indexed']} videos ({n['segments']} segments) in {d['seconds']['index']:.1f} s"
    else:
        done = f"The index is up to date ({n['unchanged']} videos, nothing to encode)"
    if n["failed"]:
        done += f"; {n['failed']} failed (xclip-search failures --index {d['index']})"
    click.echo(f"\n{done}. {yes} = the moment really shows what was asked.\n")
    for search in d["searches"]:
        click.echo(f'search "{search["query"]}"')
        for hit in search["results"]:
            mark = yes if hit["correct"] else no
            span = f"{format_time(hit['best_start'])}-{format_time(hit['best_end'])}"
            click.echo(
                f"  {hit['rank']}. {Path(hit['path']).name:<14} {span:<11} score {hit['score']:.3f}  "
                f"{mark} {hit['caption']}"
            )
            if hit.get("cue"):  # found (also) by what the subtitles say there
                click.echo(f'{"":<33}said: "{hit["cue"]["text"]}"')
        click.echo()
    click.echo("tag new clips with the 7 motions (zero-shot):")
    for row in d["tagging"]:
        shown = ", ".join(f"{x['label']} {x['prob']:.0%}" for x in row["labels"])
        mark = yes if row["correct"] else no
        click.echo(f"  {Path(row['path']).name:<10} {shown:<52} {mark} really: {row['caption']}")
    top1 = sum(1 for s in d["searches"] if s["results"] and s["results"][0]["correct"])
    tagged = sum(1 for r in d["tagging"] if r["correct"])
    total = sum(d["seconds"].values())
    click.echo(
        f"\nTop result right in {top1} of {len(d['searches'])} searches; top label right for {tagged} of "
        f"{len(d['tagging'])} new clips. {total:.0f} s in all."
    )
    click.echo("Next:")
    click.echo(f'  xclip-search search "red circle moving left" --index {d["index"]}')
    serve = f"  xclip-search serve --index {d['index']}"
    if importlib.util.find_spec("fastapi") is None:  # the web server is an extra: say so before it is tried
        serve = f"  pip install 'xclip-search[serve]'   # once, for:\n{serve}"
    click.echo(serve)
    click.echo(f"  xclip-search eval {Path(d['library']) / GROUND_TRUTH_FILE} --index {d['index']}   # recall, IoU")
