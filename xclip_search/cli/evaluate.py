"""``eval``: how well an index answers a ground truth (recall@K, median rank, MRR, temporal IoU)."""

from __future__ import annotations

from pathlib import Path

import click

from ..console import echo_json
from .base import cli, device_option, index_option, json_option


@cli.command("eval")
@click.argument("ground_truth", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@index_option()
@click.option("--candidates", type=click.IntRange(min=1), default=None, help="First-stage candidates [default: 100].")
@device_option
@json_option
def eval_cmd(
    ground_truth: Path, index_dir: Path | None, candidates: int | None, device: str | None, as_json: bool
) -> int:
    """Measure retrieval against GROUND_TRUTH, a JSON Lines file with one query per line.

    Each line names a query and the videos that answer it (paths relative to the file), optionally with the
    time span that shows it and a video to search "within". Three rankings are measured side by side: the
    first stage alone, the exact rerank of its candidates (an ordinary search), and the exact score of every
    segment; so you see what --candidates and the model cost.

    \b
    Examples:
      xclip-search eval truth.jsonl --index my-index
      xclip-search eval xclip-demo/library/ground-truth.jsonl --index xclip-demo/index --json
    """
    from ..evaluate import STAGES, evaluate, load_ground_truth
    from ..index import Index

    truth = load_ground_truth(ground_truth)  # a bad file fails before the model loads
    with Index.open(index_dir, device=device) as index:
        report = evaluate(index, truth, candidates=candidates, ground_truth=str(ground_truth.resolve()))
    if as_json:
        echo_json(report.to_dict())
        return 0
    click.echo(
        f"{report.queries} queries ({report.with_spans} with time spans) from {report.ground_truth}\n"
        f"index {report.index}; first stage: {report.candidates} candidates; exhaustive: "
        f"{report.exhaustive_candidates} segments\n"
    )
    names = {"first_stage": "first stage only", "rerank": "exact rerank", "exhaustive": "exhaustive exact"}
    click.echo(f"{'':18s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} {'median rank':>12s} {'MRR':>6s} {'mean tIoU':>10s}")
    for name in STAGES:
        m = report.stages[name]
        median = "-" if m.median_rank is None else f"{m.median_rank:g}"
        iou = "-" if m.mean_iou is None else f"{m.mean_iou:.3f}"
        r = m.recall
        click.echo(f"{names[name]:18s} {r[1]:6.3f} {r[5]:6.3f} {r[10]:6.3f} {median:>12s} {m.mrr:6.3f} {iou:>10s}")
    return 0
