"""Flower's configuration (read from the working directory by ``celery -A worker.app flower``).

Flower has no authentication by default; here it refuses to start without credentials, in every
deployment: ``IMAGEJOBS_FLOWER_USER`` / ``IMAGEJOBS_FLOWER_PASSWORD`` (or an explicit ``FLOWER_BASIC_AUTH``).
"""

import os

from shared.config import get_settings

_credentials = get_settings().flower_basic_auth() or os.environ.get("FLOWER_BASIC_AUTH")
if not _credentials:
    raise SystemExit("Flower needs credentials: set IMAGEJOBS_FLOWER_PASSWORD (and optionally IMAGEJOBS_FLOWER_USER)")

basic_auth = [_credentials]
address = os.environ.get("FLOWER_ADDRESS", "127.0.0.1")
