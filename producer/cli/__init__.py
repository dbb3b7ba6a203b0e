"""``imagejobs``: the command line. People's commands talk HTTP to the API (``producer.cli.people``); the
operator's (``keys …``, ``migrate``) work in-process on the database (``producer.cli.admin``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

# typer 0.2x vendors click here (https://github.com/fastapi/typer/releases); its usage errors carry exit codes
from typer._click import exceptions as click_exceptions

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
    except click_exceptions.UsageError as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        print("imagejobs: aborted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0
