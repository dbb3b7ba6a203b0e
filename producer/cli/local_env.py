"""What ``make run`` leaves in ``var/``: ``local.env`` (``NAME=value`` lines: the generated key and secrets) and
``redis/url`` (the private Redis it started), read so the CLI works on that stack without any setup."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from devstack.services import LOCAL_ENV, VAR

REDIS_URL_FILE = VAR / "redis" / "url"
#: where ``make run`` keeps its database unless ``IMAGEJOBS_DATABASE_URL`` says otherwise
LOCAL_DATABASE_URL = "sqlite:///var/imagejobs.db"


def read_local_env(path: Path = LOCAL_ENV) -> dict[str, str]:
    """The ``NAME=value`` lines of ``path`` (none when it does not exist)."""
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() and value:
            values[name.strip()] = value
    return values


def local_stack_defaults(environ: Mapping[str, str]) -> dict[str, str]:
    """Settings of the ``make run`` stack that ``environ`` does not set (its own values always win)."""
    found = read_local_env()
    if found and "IMAGEJOBS_DATABASE_URL" not in environ:
        found.setdefault("IMAGEJOBS_DATABASE_URL", LOCAL_DATABASE_URL)
    if REDIS_URL_FILE.is_file() and "IMAGEJOBS_REDIS_URL" not in environ:
        found.setdefault("IMAGEJOBS_REDIS_URL", REDIS_URL_FILE.read_text().strip())
    return {name: value for name, value in found.items() if not environ.get(name)}
