"""Logging set-up for every process: structured lines (structlog) with the ids of what is being worked on.

Every log record — ours through ``logging.getLogger`` and the libraries' — goes through one structlog
``ProcessorFormatter`` (https://www.structlog.org/en/stable/standard-library.html#rendering-using-structlog-based-formatters-within-logging):
JSON lines by default, a coloured console in ``make run``. The ids bound with ``bound`` (``request_id``, ``job_id``,
``provider``, ``channel``, ``task``) live in contextvars and are merged into every line logged meanwhile
(https://www.structlog.org/en/stable/contextvars.html). Secrets that slip into a message are masked.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, WrappedLogger

LogFormat = Literal["json", "console"]

_SECRET = re.compile(r"(?i)(bearer\s+|api[_-]?key[\"'=:\s]+|whsec_|authorization[\"'=:\s]+)[A-Za-z0-9._\-+/=]+")

#: the fields ``bound`` accepts: ids and bounded names only (never a prompt, never a secret)
CONTEXT_FIELDS = ("request_id", "job_id", "provider", "channel", "task")

#: an accepted ``X-Request-ID`` (anything else is replaced by a fresh id: it ends up in logs and task headers)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

#: request ids of jobs written together by another context (the API's group writer), by job id
_request_ids_by_job: ContextVar[Mapping[str, str] | None] = ContextVar("request_ids_by_job", default=None)


def redact(text: str) -> str:
    return _SECRET.sub(lambda match: f"{match.group(1)}[redacted]", text)


class RedactSecrets(logging.Filter):
    """Masks bearer tokens, API keys and webhook secrets in formatted log messages."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _redact_values(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = redact(value)
    return event_dict


def _formatter(log_format: LogFormat) -> structlog.stdlib.ProcessorFormatter:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if log_format == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact_values,
            renderer,
        ],
    )


def configure_logging(level: str | None = None, *, log_format: LogFormat | None = None) -> None:
    """Configure the root logger once (idempotent); ``log_format`` defaults to ``IMAGEJOBS_LOG_FORMAT`` or json."""
    root = logging.getLogger()
    if any(isinstance(f, RedactSecrets) for handler in root.handlers for f in handler.filters):
        return
    chosen = log_format or os.environ.get("IMAGEJOBS_LOG_FORMAT", "json")
    handler = logging.StreamHandler()
    handler.setFormatter(_formatter("console" if chosen == "console" else "json"))
    handler.addFilter(RedactSecrets())
    root.addHandler(handler)
    root.setLevel(level or os.environ.get("IMAGEJOBS_LOG_LEVEL", "INFO"))
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # our access log has the request id and template


@contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Bind ids to every log line of this context (and of threads started with a copy of it) until the block ends."""
    values = {key: value for key, value in fields.items() if value is not None}
    unknown = set(values) - set(CONTEXT_FIELDS)
    if unknown:
        raise ValueError(f"not a log context field: {sorted(unknown)}")
    with structlog.contextvars.bound_contextvars(**values):
        yield


def current(field: str) -> str | None:
    value = structlog.contextvars.get_contextvars().get(field)
    return value if isinstance(value, str) else None


def request_id_from(header: str | None) -> str:
    """The client's ``X-Request-ID`` when it is a plain token, else a fresh id."""
    if header is not None and _REQUEST_ID.match(header):
        return header
    return uuid.uuid4().hex


def request_id_of_job(job_id: str) -> str | None:
    """The request id a job's messages carry: the one bound for it by ``request_ids_for_jobs``, else the current."""
    by_job = _request_ids_by_job.get()
    if by_job is not None and job_id in by_job:
        return by_job[job_id]
    return current("request_id")


@contextmanager
def request_ids_for_jobs(by_job: Mapping[str, str]) -> Iterator[None]:
    """Jobs of several requests published together: each job's messages carry its own request's id."""
    token = _request_ids_by_job.set(by_job)
    try:
        yield
    finally:
        _request_ids_by_job.reset(token)


def begin_task(**fields: str | None) -> None:
    """A worker task starts: its log context is exactly ``fields`` (nothing left over from the thread's last task)."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**{key: value for key, value in fields.items() if value is not None})


def bind(**fields: str | None) -> None:
    """Add ids learnt during a task (the job's provider, its channel) to the rest of its log lines."""
    structlog.contextvars.bind_contextvars(**{key: value for key, value in fields.items() if value is not None})


def end_task() -> None:
    structlog.contextvars.clear_contextvars()
