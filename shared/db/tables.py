"""The tables: jobs (job, job_event, job_image, cost_entry, job_batch), webhook_delivery and the API keys."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Dialect, Index, Numeric, String, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from shared.jobs import JobStatus

MONEY = Numeric(18, 6)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _when() -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=True)


def _stamp() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class Job(SQLModel, table=True):
    """One image-generation request, from acceptance to a terminal state."""

    __tablename__ = "job"
    __table_args__ = (
        UniqueConstraint("owner", "external_task_id", name="uq_job_owner_external_task_id"),
        Index("ix_job_status_next_poll_at", "status", "next_poll_at"),
        Index("ix_job_finished_at", "finished_at"),
    )

    id: str = Field(primary_key=True, max_length=32)
    #: id of the API key that created the job (a hash prefix, never the key)
    owner: str = Field(max_length=32, index=True)
    status: JobStatus = Field(default=JobStatus.QUEUED, sa_type=String(16), index=True)
    model: str = Field(max_length=64)
    variant: str | None = Field(default=None, max_length=64)
    provider: str = Field(max_length=32)
    upstream_model: str = Field(max_length=64)
    operation: str = Field(max_length=32)
    upstream_params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    image_count: int = 1
    response_format: str = Field(default="url", max_length=16)
    callback_url: str | None = Field(default=None, max_length=2048)
    #: the progress webhooks asked for besides the terminal one (``shared.jobs.WEBHOOK_EVENTS``); None: none
    webhook_events: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    external_task_id: str | None = Field(default=None, max_length=128)
    price_per: str = Field(max_length=16)
    unit_price: Decimal = Field(sa_type=MONEY)
    currency: str = Field(max_length=16)
    #: what the price was taken at and the token rates, when the upstream bills by usage (``shared.catalog.pricing``)
    pricing: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    #: what the upstream said about the result besides the images (OpenAI: size, quality, background,
    #: output_format, usage)
    upstream_report: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    polling_policy: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    upstream_task_id: str | None = Field(default=None, max_length=128)
    #: low | normal | high: the order within the provider's queues
    priority: str = Field(default="normal", max_length=8)
    #: the upstream credential (channel) that took the job, when a provider has several
    channel: str | None = Field(default=None, max_length=64)
    submit_attempts: int = 0
    poll_count: int = 0
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, max_length=1000)
    created_at: datetime = _stamp()
    updated_at: datetime = _stamp()
    #: when the submit task was last sent (sweeper re-sends lost ones)
    dispatched_at: datetime | None = _when()
    lease_until: datetime | None = _when()
    next_poll_at: datetime | None = _when()
    #: when the upstream accepted the task (``→ running``): what the learned poll schedule measures from
    running_since: datetime | None = _when()
    deadline_at: datetime | None = _when()
    finished_at: datetime | None = _when()
    #: when retention (or an erasure) deleted the job's result images / its stored input images
    results_deleted_at: datetime | None = _when()
    inputs_deleted_at: datetime | None = _when()
    #: the batch (``POST /v1/images/batches``) the job was created in, if any
    batch_id: str | None = Field(default=None, max_length=32, index=True)
    #: its item's position in that batch request (0-based)
    batch_index: int | None = None


class JobEvent(SQLModel, table=True):
    """Append-only history: one row per status change."""

    __tablename__ = "job_event"

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=32)
    from_status: str | None = Field(default=None, max_length=16)
    to_status: str = Field(max_length=16)
    at: datetime = _stamp()
    detail: str | None = Field(default=None, max_length=1000)


class JobImage(SQLModel, table=True):
    """A result image we stored."""

    __tablename__ = "job_image"
    __table_args__ = (UniqueConstraint("job_id", "index", name="uq_job_image_job_id_index"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=32)
    index: int
    storage_key: str = Field(max_length=256)
    content_type: str = Field(max_length=64)
    byte_size: int
    width: int | None = None
    height: int | None = None


class CostEntry(SQLModel, table=True):
    """What one job cost; written only by the winner of the ``succeeded`` transition."""

    __tablename__ = "cost_entry"

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", unique=True, max_length=32)
    owner: str = Field(max_length=32, index=True)
    model: str = Field(max_length=64)
    per: str = Field(max_length=16)
    unit_price: Decimal = Field(sa_type=MONEY)
    quantity: int
    amount: Decimal = Field(sa_type=MONEY)
    currency: str = Field(max_length=16)
    #: per_image | per_request | usage (``shared.catalog.pricing.Basis``); None on rows written before it existed
    basis: str | None = Field(default=None, max_length=16)
    #: what the amount was computed from (price parameters; usage and token rates when billed by usage)
    inputs: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = _stamp()


class WebhookDelivery(SQLModel, table=True):
    """One delivery attempt (scheduled, in flight or done) of a job's terminal event."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("webhook_id", "attempt", name="uq_webhook_delivery_webhook_id_attempt"),
        Index("ix_webhook_delivery_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    #: the job whose terminal event this is; None for a batch's ``batch.completed`` event
    job_id: str | None = Field(default=None, foreign_key="job.id", index=True, max_length=32)
    #: the batch whose ``batch.completed`` event this is (None for a job's event)
    batch_id: str | None = Field(default=None, foreign_key="job_batch.id", index=True, max_length=32)
    #: the Standard Webhooks ``webhook-id``: the same for every attempt of one event
    webhook_id: str = Field(max_length=64)
    event_type: str = Field(max_length=32)
    url: str = Field(max_length=2048)
    attempt: int
    #: pending → sending → delivered | failed
    state: str = Field(default="pending", max_length=16)
    next_attempt_at: datetime = _stamp()
    started_at: datetime | None = _when()
    finished_at: datetime | None = _when()
    response_status: int | None = None
    latency_ms: int | None = None
    error: str | None = Field(default=None, max_length=500)


class ApiKey(SQLModel, table=True):
    """An API key created with ``imagejobs keys create``: stored hashed, with its tenant's limits and secrets.

    Keys given in ``IMAGEJOBS_API_KEYS`` are bootstrap keys and have no row.
    """

    __tablename__ = "api_key"

    #: the tenant id (``job.owner``): a prefix of the key's SHA-256, as for bootstrap keys
    id: str = Field(primary_key=True, max_length=32)
    key_hash: str = Field(max_length=64, unique=True)
    #: the first characters of the key, to recognise it in listings
    prefix: str = Field(max_length=16)
    name: str = Field(default="", max_length=100)
    created_at: datetime = _stamp()
    revoked_at: datetime | None = _when()
    requests_per_minute: int | None = None
    spend_budget: Decimal | None = Field(default=None, sa_type=MONEY)
    webhook_secret: str = Field(max_length=128)
    #: during a rotation the previous secret keeps signing too, until it expires
    previous_webhook_secret: str | None = Field(default=None, max_length=128)
    previous_secret_expires_at: datetime | None = _when()


class DisabledWebhookEndpoint(SQLModel, table=True):
    """A callback URL that answered ``410 Gone``: no more deliveries go to it for that tenant."""

    __tablename__ = "disabled_webhook_endpoint"
    __table_args__ = (UniqueConstraint("owner", "url_hash", name="uq_disabled_webhook_endpoint_owner_url_hash"),)

    id: int | None = Field(default=None, primary_key=True)
    owner: str = Field(max_length=32)
    url_hash: str = Field(max_length=64)
    url: str = Field(max_length=2048)
    disabled_at: datetime = _stamp()


class JobBatch(SQLModel, table=True):
    """Up to 1,000 jobs created by one ``POST /v1/images/batches``; progress is read from its jobs.

    ``finished_at`` is set (once, by the sweeper) when every job has ended; with a ``callback_url`` that is also
    when the single ``batch.completed`` webhook is scheduled.
    """

    __tablename__ = "job_batch"

    id: str = Field(primary_key=True, max_length=32)
    owner: str = Field(max_length=32, index=True)
    job_count: int
    callback_url: str | None = Field(default=None, max_length=2048)
    created_at: datetime = _stamp()
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True, index=True)
