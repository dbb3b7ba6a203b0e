"""The CLI's one way to fail: a readable line on stderr and a non-zero exit code, never a traceback."""

from __future__ import annotations

import sys

from shared.errors import ImageJobsError


class CliError(ImageJobsError):
    """Stops the command; ``str(failure)`` is the line printed after ``imagejobs: ``."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(failure: CliError) -> int:
    print(f"imagejobs: {failure}", file=sys.stderr)
    return failure.exit_code
