"""``verify``: check every stored file of an index against its checksum, and ``--repair`` what is damaged."""

from __future__ import annotations

from pathlib import Path

import click

from ..console import BarProgress, echo_json
from ..defaults import default_index_dir
from .base import cli, device_option, index_option, json_option


@cli.command("verify")
@index_option()
@click.option(
    "--repair",
    is_flag=True,
    help="Rebuild a damaged manifest from the catalog, re-embed the videos of damaged shards, rebuild the ANN.",
)
@device_option
@json_option
def verify_cmd(index_dir: Path | None, repair: bool, device: str | None, as_json: bool) -> int:
    """Read every stored file of an index and compare it with its recorded checksum.

    Checks the manifest, the catalog (SQLite integrity_check), every vector shard (with the videos a damaged
    one holds) and the ANN file. With --repair, re-embeds exactly the videos of damaged or missing shards from
    their files, after which searches answer as the undamaged index did. Exit code 1 while damage remains.

    \b
    Examples:
      xclip-search verify
      xclip-search verify --index my-index --repair --json
    """
    from ..store.integrity import verify_index

    target = (index_dir or default_index_dir()).expanduser().resolve()
    if repair:
        from indexer.repair import repair_index

        report = repair_index(target, device=device, progress=BarProgress(enabled=not as_json))
    else:
        report = verify_index(target)
    if as_json:
        echo_json(report.to_dict())
        return 0 if report.ok else 1
    for line in report.repaired:
        click.echo(f"Repaired: {line}")
    shards = report.shards
    click.echo(
        f"Checked {target}: manifest, catalog, {len(shards)} shard(s) of {sum(s.count for s in shards)} "
        f"segment(s){', ANN' if report.ann is not None else ''}"
    )
    bad = [f for f in (report.manifest, report.catalog, report.ann) if f is not None and not f.ok]
    for f in bad:
        click.echo(f"DAMAGED {f.file}: {f.problem}")
    for s in report.damaged_shards:
        click.echo(
            f"DAMAGED shard {s.name}: {', '.join(s.damaged_files)}; holds {len(s.videos)} video(s): "
            f"{', '.join(s.videos) or '-'}"
        )
    old = sum(1 for s in shards if not s.row_hashes)
    if old:
        click.echo(f"{old} shard(s) predate row hashes: searches verify them whole, once per process.")
    if report.ok:
        click.echo("OK: every file matches its checksum.")
        return 0
    click.echo("Run 'xclip-search verify --repair' to repair.", err=True)
    return 1
