"""``reindex``, ``compact``, ``export`` and ``info``: looking after an index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..console import echo_json, format_bytes
from ..defaults import default_index_dir
from .base import cli, filter_options, index_option, json_option

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
    from ..store import ann as ann_store
    from ..store.manifest import read_manifest
    from ..store.writer import IndexWriter

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
            "params": {k: v for k, v in info.params.items() if k not in ("memory_bytes", "reason", "build")},
            "reason": info.params.get("reason"),
            "build": info.params.get("build"),
        },
    }
    if as_json:
        echo_json(data)
    else:
        click.echo(f"Rebuilt the ANN index of {target}: {_ann_line(data['ann'])}")
        if data["ann"]["reason"]:
            asked = f"asked for {ann_kind}, built {info.kind}: " if ann_kind not in (None, "auto", info.kind) else ""
            click.echo(f"  why: {asked}{data['ann']['reason']}")
    return 0


def _ann_line(ann: dict[str, Any] | None) -> str:
    if ann is None:
        return "none yet"
    p = ann.get("params", {})
    detail = {
        "ivfpq": f"IVF{p.get('nlist')},PQ{p.get('m')}, nprobe {p.get('nprobe')}, refine x{p.get('refine')}",
        "hnsw": f"HNSW{p.get('M')}, efSearch {p.get('efSearch')}",
    }.get(ann["type"], "exact")
    line = (
        f"{ann['type']} ({detail}), {ann['count']} vectors, {format_bytes(ann['bytes'])} on disk, "
        f"~{format_bytes(ann.get('memory_bytes', ann['bytes']))} in memory"
    )
    build = ann.get("build")
    if build:
        trained = f"trained on {build['trained_on']} of {build['vectors']} vectors, " if build["trained_on"] else ""
        line += (
            f"; built in {build['seconds']:.1f} s ({trained}added in {build['chunks']} chunk(s) "
            f"of up to {build['chunk_size']})"
        )
    return line


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
    from ..index import Index

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


# -- compact ----------------------------------------------------------------------------------------------


@cli.command("compact")
@index_option()
@json_option
def compact_cmd(index_dir: Path | None, as_json: bool) -> int:
    """Rewrite the vector shards that hold dead rows (deleted or changed videos) and merge small shards.

    'index' runs compact by themselves when dead rows pass 20% of the vector data or small shards pile up;
    this does it now, whatever the amount. Searches keep answering meanwhile; the old files are deleted once
    no reader can still be using them (10 minutes after the compaction, by a later writer).

    \b
    Examples:
      xclip-search compact
      xclip-search compact --index my-index --json
    """
    from ..store.manifest import read_manifest
    from ..store.writer import IndexWriter

    target = (index_dir or default_index_dir()).expanduser().resolve()
    identity = read_manifest(target).model
    with IndexWriter(target, identity) as writer:
        report = writer.compact(force=True)
        ann = writer.manifest.ann
        if writer.manifest.shards and (ann is None or ann.generation != writer.manifest.generation):
            writer.publish_ann()  # compaction drops the ANN (see store.compaction); so may a crashed one
    data: dict[str, Any] = {"index": str(target), **report.to_dict()}
    if as_json:
        echo_json(data)
    elif report.compacted:
        click.echo(
            f"Compacted {target}: {report.shards_before} shards -> {report.shards_after}, "
            f"{report.rows_copied} rows kept, {report.rows_dropped} dead rows dropped, "
            f"{format_bytes(report.bytes_before)} -> {format_bytes(report.bytes_after)} in {report.seconds:.1f} s"
        )
    else:
        click.echo(f"Nothing to compact in {target} ({report.reason})")
    return 0


def _compaction_line(d: dict[str, Any]) -> str:
    line = f"{d['live_rows']} live, {d['dead_rows']} dead in {d['shards']} shards"
    if d["reclaimable_bytes"]:
        line += f"; 'compact' would reclaim {format_bytes(d['reclaimable_bytes'])}"
    if d["retired_bytes"]:
        line += f"; {format_bytes(d['retired_bytes'])} retired, kept for older readers"
    return line


# -- info -------------------------------------------------------------------------------------------------


def _segmentation_line(d: dict[str, Any]) -> str:
    from ..store.segmentation import RecordedSegmentation, Segmentation

    recorded = bool(d["recorded"])
    settings = Segmentation.from_dict(d)
    return RecordedSegmentation(settings, recorded).describe()


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
    from ..index import Index

    with Index.open(index_dir) as index:
        data = index.info()
        fails = index.failed_videos() if failures else None
    if fails is not None:
        data["failures"] = [{"path": f.path, "status": f.status, "reason": f.reason} for f in fails]
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
        ("subtitle lines", f"{data.get('cues', 0)} (search matches what is said too)" if data.get("cues") else "none"),
        ("segmentation", _segmentation_line(data["segmentation"])),
        ("ANN", _ann_line(ann)),
        (
            "disk",
            f"{format_bytes(data['bytes']['total'])} (vectors {format_bytes(data['bytes']['vectors'])}, "
            f"catalog {format_bytes(data['bytes']['catalog'])})",
        ),
        ("vector rows", _compaction_line(data["compaction"])),
        ("catalog", f"{data['catalog']['url']} ({data['catalog']['backend']})"),
        ("generation", data["generation"]),
        ("updated", data["updated_at"]),
    ]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        click.echo(f"{key.ljust(width)}  {value}")
    if fails is not None:
        click.echo(f"\n{len(fails)} failed or skipped file(s):")
        for f in fails:
            click.echo(f"  {f.status}: {f.path}: {f.reason}")
    return 0
