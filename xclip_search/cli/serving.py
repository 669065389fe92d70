"""``serve``: the HTTP API and web page."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..console import echo_json
from ..defaults import default_index_dir
from ..errors import InvalidArgumentError
from .base import cli, device_option, index_option, json_option
from .indexing import speech_options
from .watching import notice, print_batch, watch_options

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
@click.option(
    "--watch",
    "watch_paths",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    metavar="FOLDER",
    help="Also keep the index current with the videos under FOLDER, like 'xclip-search watch' (repeatable).",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=None,
    help="Threads one search may use [default: all cores]. On a busy or shared machine 1 is steadier: a team of "
    "threads waits at every step for its slowest member. Tagging always runs on one.",
)
@watch_options
@speech_options
@device_option
@json_option
def serve_cmd(
    index_dir: Path | None,
    host: str,
    port: int,
    token: str | None,
    watch_paths: tuple[Path, ...],
    threads: int | None,
    poll: bool,
    settle_s: float,
    transcribe: bool,
    speech_model: str | None,
    device: str | None,
    as_json: bool,
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
      xclip-search serve --watch ~/Videos                 # new videos become searchable within seconds
      xclip-search serve --watch ~/Lectures --transcribe  # ... and what is said in them
    """
    try:
        from ..serve.app import ServeSettings
        from ..serve.runner import run_server
    except ImportError as exc:
        from ..errors import DependencyError

        raise DependencyError(
            f"The web server needs extra packages ({exc.name} is missing)",
            hint="pip install 'xclip-search[serve]'",
        ) from exc
    from ..serve.security import is_loopback

    settings = ServeSettings(
        index_dir=index_dir or default_index_dir(), host=host, port=port, token=token, device=device, threads=threads
    )

    def ready(url: str) -> None:
        if as_json:
            echo_json({"url": url, "index": str(Path(settings.index_dir).resolve()), "token": bool(token)})
            sys.stdout.flush()
        else:
            click.echo(f"Serving {Path(settings.index_dir).resolve()} at {url}  (Ctrl+C to stop)", err=True)
            if not is_loopback(host) and not token:
                click.echo("Warning: listening beyond localhost without --token; write operations are off.", err=True)

    if not watch_paths:
        if transcribe or speech_model:
            raise InvalidArgumentError(
                "--transcribe and --speech-model apply to the folders given with --watch",
                hint="xclip-search serve --watch FOLDER --transcribe",
            )
        run_server(settings, on_ready=ready)
        return 0
    from indexer import IndexOptions
    from indexer.watch import Watcher, WatchSettings, watching_in_background

    watcher = Watcher(
        [str(p) for p in watch_paths],
        settings.index_dir,
        options=IndexOptions(transcribe=transcribe, speech_model=speech_model),
        settings=WatchSettings(settle_s=settle_s, polling=poll),
        on_batch=print_batch(False),  # on stderr: stdout carries the one --json line
        on_notice=notice,
    )
    with watching_in_background(watcher):
        run_server(settings, on_ready=ready)
    return 0
