"""Logging set-up for every process, with a filter that redacts secrets that slip into messages."""

from __future__ import annotations

import logging
import os
import re

_SECRET = re.compile(r"(?i)(bearer\s+|api[_-]?key[\"'=:\s]+|whsec_|authorization[\"'=:\s]+)[A-Za-z0-9._\-+/=]+")


class RedactSecrets(logging.Filter):
    """Masks bearer tokens, API keys and webhook secrets in formatted log messages."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET.sub(lambda match: f"{match.group(1)}[redacted]", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(level: str | None = None) -> None:
    """Configure the root logger once (idempotent)."""
    root = logging.getLogger()
    if any(isinstance(f, RedactSecrets) for handler in root.handlers for f in handler.filters):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets())
    root.addHandler(handler)
    root.setLevel(level or os.environ.get("IMAGEJOBS_LOG_LEVEL", "INFO"))
    logging.getLogger("httpx").setLevel(logging.WARNING)
