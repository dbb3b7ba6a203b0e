"""``imagejobs``: the command line. People's commands talk HTTP to the API (``producer.cli.people``); the
operator's (``keys …``, ``migrate``) work in-process on the database (``producer.cli.admin``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click
import typer

from producer.cli import admin, people
from producer.cli.failures import CliError, fail

app = typer.Typer(
    name="imagejobs",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # an error is one line (CliError), never a traceback
)
people.register(app)
admin.register(app)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code. A usage error exits 2 (as ``argparse`` did)."""
    try:
        result = app(args=list(argv) if argv is not None else None, prog_name="imagejobs", standalone_mode=False)
    except CliError as failure:
        return fail(failure)
    except click.exceptions.UsageError as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        print("imagejobs: aborted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0
