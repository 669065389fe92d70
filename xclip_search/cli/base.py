"""The command group, its error handling and the options several commands share."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import __version__
from ..defaults import INDEX_ENV
from ..errors import XClipSearchError

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
            flag = f" (--{exc.argument.replace('_', '-')})" if exc.argument else ""
            click.echo(f"Error: {exc.message}{flag}", err=True)
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


def filter_options(f: F) -> F:
    """The catalog filters shared by search, similar, tag --index and export; the command receives `where`."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..filters import SearchFilter

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
