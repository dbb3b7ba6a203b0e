"""One Settings object for every process, read from ``IMAGEJOBS_*`` environment variables.

Nested sections use ``__``: ``IMAGEJOBS_KLING__ACCESS_KEY``, ``IMAGEJOBS_CELERY__VISIBILITY_TIMEOUT_S``.
A provider without real credentials is *disabled* (its models answer a 400 naming the missing setting) unless
``IMAGEJOBS_EMULATOR_URL`` is set: then it is pointed at that emulator with the emulator's credentials. Only
``make run`` and the tests set it; production never talks to the emulator by accident.
Only this module reads the environment.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.errors import ConfigurationError

#: credentials the emulator accepts by default (not secrets: they only open the local stand-in)
EMULATOR_KLING_ACCESS_KEY = "emulator-ak"
EMULATOR_KLING_SECRET_KEY = "emulator-kling-secret-key-local-only"
EMULATOR_OPENAI_API_KEY = "emulator-openai-key"


class CelerySettings(BaseModel):
    """Broker timings; the same values must hold in every process (soft < hard < visibility)."""

    visibility_timeout_s: int = Field(default=900, ge=60)
    soft_time_limit_s: int = Field(default=240, ge=5)
    time_limit_s: int = Field(default=270, ge=10)
    worker_concurrency: int = Field(default=16, ge=1, le=512)
    #: submit steps (claim, upstream call, finish) one worker process keeps in flight beside its pool; 0: run them
    #: on the pool's threads (a 5–60 s sync generation then holds a pool thread for its whole duration)
    inflight_submits: int = Field(default=1000, ge=0, le=10_000)
    eta_task_limit: int = Field(default=2000, ge=10)
    task_events: bool = True
    #: a stopping worker gives running tasks this long before its cold shutdown restores what it holds
    soft_shutdown_timeout_s: float = Field(default=20.0, ge=0, le=300)
    #: a file the worker touches while it consumes (``python -m worker.liveness`` probes it); unset: none
    heartbeat_file: Path | None = None

    @model_validator(mode="after")
    def _limits_are_ordered(self) -> Self:
        if not self.soft_time_limit_s < self.time_limit_s < self.visibility_timeout_s:
            raise ValueError("celery limits must satisfy soft_time_limit_s < time_limit_s < visibility_timeout_s")
        return self


class SweeperSettings(BaseModel):
    """The beat sweeper: how often it runs and when something counts as lost."""

    interval_s: float = Field(default=15.0, gt=0, le=300)
    #: a job still ``queued`` this long after its last dispatch is re-sent
    requeue_after_s: float = Field(default=60.0, gt=0)
    #: a claimed submit holds its lease this long; afterwards the job may be re-claimed
    submit_lease_s: float = Field(default=300.0, gt=0)
    #: a poll chain whose ``next_poll_at`` is this much overdue is restarted
    poll_overdue_s: float = Field(default=60.0, gt=0)
    #: a webhook attempt claimed this long ago without a result is re-sent
    webhook_stale_s: float = Field(default=60.0, gt=0)
    max_submit_attempts: int = Field(default=3, ge=1, le=20)
    batch_size: int = Field(default=500, ge=1)


class EgressSettings(BaseModel):
    """Who may be contacted at caller-supplied URLs beyond the public internet (see shared/egress.py)."""

    allow_hosts: list[str] = Field(default_factory=list)
    #: e.g. ["127.0.0.0/8"] for a local webhook receiver (the quick start sets this)
    allow_networks: list[str] = Field(default_factory=list)
    #: redirect hops followed when fetching input images (each re-checked); webhooks never follow redirects
    max_redirects: int = Field(default=3, ge=0, le=10)

    @field_validator("allow_networks")
    @classmethod
    def _networks_parse(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value


class WebhookSettings(BaseModel):
    """Signed deliveries to a job's ``callback_url``."""

    secret: SecretStr
    #: set while rotating ``secret``: deliveries carry a signature with each
    previous_secret: SecretStr | None = None
    timeout_s: float = Field(default=15.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    #: waits before attempt 2, 3, … (Standard Webhooks' example: ~10 attempts over ~3 days), ±``jitter``;
    #: waits up to 300 s are Celery countdowns, longer ones are rows the sweeper sends when due
    retry_delays_s: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0]
    )
    jitter: float = Field(default=0.1, ge=0, le=0.5)
    #: the longest ``Retry-After`` of a 429 we honour
    max_retry_after_s: float = Field(default=86400.0, gt=0)

    @field_validator("secret", "previous_secret")
    @classmethod
    def _is_standard_webhooks_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        try:
            key = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            key = b""
        if not raw.startswith("whsec_") or not 24 <= len(key) <= 64:
            raise ValueError("must be 'whsec_' followed by 24–64 base64-encoded random bytes")
        return value

    @field_validator("retry_delays_s")
    @classmethod
    def _non_negative(cls, value: list[float]) -> list[float]:
        if any(delay < 0 for delay in value):
            raise ValueError("retry delays must not be negative")
        return value


class UpstreamCallbackSettings(BaseModel):
    """Upstream callbacks as a fast path (Kling ``callback_url``, BFL ``webhook_url``) next to a sparse safety poll.

    Off by default: the upstream must reach ``base_url`` (the emulator on this machine can; a real upstream needs a
    public URL). A callback only makes a worker poll at once; the safety poll finishes a job whose callback is lost.
    """

    enabled: bool = False
    #: where upstreams reach ``/internal/callbacks/…`` (default: ``public_base_url``)
    base_url: str | None = None
    #: which of the providers that support callbacks are given ours
    providers: list[Literal["kling", "bfl"]] = ["kling", "bfl"]
    #: a job expecting a callback is first polled after this long (or the catalog's first poll, if later) …
    safety_first_poll_s: float = Field(default=30.0, gt=0, le=300)
    #: … and then every this long (± the catalog's jitter)
    safety_interval_s: float = Field(default=60.0, gt=0, le=300)


class LimitSettings(BaseModel):
    """Request body sizes, the per-process API-key cache, and the limits of bootstrap keys."""

    #: JSON (and any other non-multipart) request bodies above this answer 413
    max_json_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    #: multipart uploads (image edits) above this answer 413
    max_multipart_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    #: how long a process caches a database key's look-up: a revoked key stops working within this time
    key_cache_ttl_s: float = Field(default=10.0, ge=0, le=300)
    #: requests per minute allowed to each ``IMAGEJOBS_API_KEYS`` key (unset: unlimited)
    bootstrap_requests_per_minute: int | None = Field(default=None, ge=1)


class MetricsSettings(BaseModel):
    """Prometheus scraping: the API's ``/metrics`` and each worker's own port."""

    #: when set, ``/metrics`` answers only ``Authorization: Bearer <token>`` (unset: open, for a private network)
    token: SecretStr | None = None
    #: the port each worker serves its metrics on (unset or 0: no metrics server in the worker)
    worker_port: int = Field(default=0, ge=0, le=65535)


#: SigV4 presigned URLs live at most 7 days
#: (https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html)
MAX_PRESIGN_TTL_S = 7 * 24 * 3600


class StorageSettings(BaseModel):
    """Where result and input images live: ``file://…`` (one host) or ``s3://bucket/prefix`` (any S3 API).

    Unset ``url``: ``file://`` + ``IMAGEJOBS_FILES_DIR`` (``var/files``). Credentials unset with S3: the standard
    AWS sources (``AWS_*`` variables, instance or pod roles).
    """

    url: str | None = None
    #: e.g. ``http://127.0.0.1:9000`` (MinIO) or ``https://<account>.r2.cloudflarestorage.com`` (R2)
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    #: with S3: result URLs are presigned GET URLs of the store (True) or ``/v1/files`` URLs the API streams (False)
    presign: bool = True
    #: the endpoint callers reach the store at, when it is not ``endpoint_url`` (e.g. ``http://minio:9000`` inside
    #: a compose network, ``https://files.example.com`` outside): presigned URLs are signed for this host
    presign_endpoint_url: str | None = None
    #: ``https://bucket.endpoint/key`` instead of ``https://endpoint/bucket/key`` (AWS; most others want False)
    virtual_hosted_style: bool = False
    #: one storage request's limit; a slower store counts as unavailable (the job is retried, not failed)
    timeout_s: float = Field(default=20.0, gt=0, le=300)
    #: inline input images (data URIs, base64) longer than this are moved to storage at accept time
    inline_input_max_chars: int = Field(default=16 * 1024, ge=0)

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("file://"):
            if not value.removeprefix("file://"):
                raise ValueError("file:// needs a directory, e.g. file://var/files")
            return value
        bucket = value.removeprefix("s3://").split("/", 1)[0]
        if not value.startswith("s3://") or not _BUCKET.fullmatch(bucket):
            raise ValueError("must be file://DIR or s3://BUCKET[/PREFIX] with a valid bucket name")
        return value.rstrip("/")

    @field_validator("endpoint_url", "presign_endpoint_url")
    @classmethod
    def _endpoint_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _credentials_come_in_pairs(self) -> Self:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("ACCESS_KEY_ID and SECRET_ACCESS_KEY are set together or not at all")
        return self

    def is_s3(self) -> bool:
        return self.url is not None and self.url.startswith("s3://")


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class RetentionSettings(BaseModel):
    """How long what a finished job leaves behind is kept (None: forever); the beat task deletes the rest.

    Clocks start when the job ends. Deleting a job's rows deletes its events, image rows, webhook deliveries
    and its cost entry: export billing before ``jobs_s`` ends.
    """

    #: result images (objects and their rows); the task object shows this as ``expires_at``
    results_s: float | None = Field(default=30 * 24 * 3600, gt=0)
    #: input images moved to storage at accept time
    inputs_s: float | None = Field(default=24 * 3600, gt=0)
    #: the job row with its events, image rows, deliveries and cost entry
    jobs_s: float | None = Field(default=None, gt=0)
    interval_s: float = Field(default=300.0, gt=0, le=86400)
    #: jobs handled per run (a run stops after this many; the next run goes on)
    batch_size: int = Field(default=200, ge=1, le=10000)

    @model_validator(mode="after")
    def _rows_outlive_files(self) -> Self:
        if self.jobs_s is not None and any(
            kept is None or kept > self.jobs_s for kept in (self.results_s, self.inputs_s)
        ):
            raise ValueError("JOBS_S must be at least RESULTS_S and INPUTS_S (a job row refers to its files)")
        return self


#: the channel of a provider section's own credentials (``channels`` adds more)
DEFAULT_CHANNEL = "default"

#: how a provider is served: real credentials, the emulator (``IMAGEJOBS_EMULATOR_URL``), or not at all
ProviderMode = Literal["live", "emulated", "disabled"]


class ChannelSettings(BaseModel):
    """One more credential of a provider (a channel). Unset fields fall back to the provider's section."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    api_key: SecretStr | None = None
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    base_url: str | None = None
    weight: float | None = Field(default=None, gt=0)
    priority: int | None = Field(default=None, ge=0)
    requests_per_second: float | None = Field(default=None, gt=0)
    burst: float | None = Field(default=None, ge=1)
    max_concurrent: int | None = Field(default=None, ge=1)


class UpstreamSettings(BaseModel):
    """How failing channels cool down and jobs wait for upstream capacity (worker/capacity/)."""

    #: a failing channel rests base · 2^k seconds (k: its earlier failures in a row), at most ``cooldown_max_s``
    cooldown_base_s: float = Field(default=5.0, gt=0)
    cooldown_max_s: float = Field(default=300.0, gt=0, le=3600)
    #: 5xx answers and timeouts in a row before a channel cools down (a 429 or refused credentials: at once)
    failures_before_cooldown: int = Field(default=3, ge=1)
    #: how long a job waits in its queue before asking again for a concurrency slot of a busy channel
    slot_wait_s: float = Field(default=2.0, gt=0, le=60)
    #: Redis key prefix of the limiter and the channels' health (apart from the broker's keys)
    key_prefix: str = "imagejobs:upstream"


class ProviderSettings(BaseModel):
    """One upstream: where it is, the key, how long to wait. Unset credentials → disabled, or the emulator
    when ``IMAGEJOBS_EMULATOR_URL`` is set."""

    #: the fields a channel must set (Kling: its AK/SK pair)
    credential_fields: ClassVar[tuple[str, ...]] = ("api_key",)

    #: decided once by ``Settings`` (not settable from the environment)
    _mode: ProviderMode = PrivateAttr(default="live")

    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    real_base_url: str = ""
    #: the section's own credentials are the channel "default": its weight and priority (lower is tried first)
    weight: float = Field(default=1.0, gt=0)
    priority: int = Field(default=0, ge=0)
    #: fleet-wide limits of each channel (a channel may set its own): upstream requests per second (None:
    #: unlimited), how many may go out back to back, and upstream tasks in flight (None: unlimited)
    requests_per_second: float | None = Field(default=None, gt=0)
    burst: float = Field(default=1.0, ge=1)
    max_concurrent: int | None = Field(default=None, ge=1)
    #: more credentials: ``IMAGEJOBS_KLING__CHANNELS='[{"name": "kling-b", "access_key": "…", "secret_key": "…"}]'``
    channels: list[ChannelSettings] = Field(default_factory=list)

    def has_credentials(self) -> bool:
        return self.api_key is not None

    @property
    def mode(self) -> ProviderMode:
        return self._mode

    def credential_settings(self, name: str) -> tuple[str, ...]:
        """The variables that give section ``name`` its credentials, e.g. ``IMAGEJOBS_OPENAI__API_KEY``."""
        return tuple(f"IMAGEJOBS_{name.upper()}__{field.upper()}" for field in self.credential_fields)

    @model_validator(mode="after")
    def _channels_are_usable(self) -> Self:
        names = [channel.name for channel in self.channels]
        if DEFAULT_CHANNEL in names or len(set(names)) != len(names):
            raise ValueError(f"channel names must be unique and not {DEFAULT_CHANNEL!r}")
        for channel in self.channels:
            if missing := [name for name in self.credential_fields if getattr(channel, name) is None]:
                raise ValueError(f"channel {channel.name!r} needs {', '.join(missing)}")
        return self

    def channel_names(self) -> list[str]:
        """The usable channels: "default" (when the section has credentials) and the extra ones, in order."""
        default = [DEFAULT_CHANNEL] if self.has_credentials() else []
        return default + [channel.name for channel in self.channels]

    def for_channel(self, name: str) -> Self:
        """This section as channel ``name`` sees it: its credentials, base URL, weight, priority and limits."""
        if name == DEFAULT_CHANNEL:
            return self
        [channel] = [channel for channel in self.channels if channel.name == name]
        changes = {key: value for key, value in channel if key != "name" and value is not None}
        if channel.base_url:
            changes["base_url"] = channel.base_url.rstrip("/")
        return self.model_copy(update={**changes, "channels": []})


class KlingSettings(ProviderSettings):
    """Kling (AK/SK → HS256 JWT)."""

    credential_fields: ClassVar[tuple[str, ...]] = ("access_key", "secret_key")

    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    real_base_url: str = "https://api-singapore.klingai.com"

    def has_credentials(self) -> bool:
        return self.access_key is not None and self.secret_key is not None


class OpenAISettings(ProviderSettings):
    """OpenAI Images. DALL·E was retired upstream on 2026-05-12: those names are served by a replacement."""

    timeout_s: float = Field(default=180.0, gt=0)
    real_base_url: str = "https://api.openai.com"
    dalle_replacement: str = "gpt-image-1"


class GeminiSettings(ProviderSettings):
    """Google Gemini ``generateContent`` (the nano-banana family); ``x-goog-api-key``."""

    timeout_s: float = Field(default=120.0, gt=0)
    real_base_url: str = "https://generativelanguage.googleapis.com"


class ArkSettings(ProviderSettings):
    """ByteDance Ark (Seedream) images API."""

    timeout_s: float = Field(default=120.0, gt=0)
    real_base_url: str = "https://ark.ap-southeast.bytepluses.com"


class BflSettings(ProviderSettings):
    """Black Forest Labs (Flux): async, ``x-key``, poll the returned ``polling_url``."""

    timeout_s: float = Field(default=30.0, gt=0)
    real_base_url: str = "https://api.bfl.ai"
    #: BFL allows 24 active tasks per account
    max_concurrent: int | None = Field(default=24, ge=1)


class RelaySettings(ProviderSettings):
    """Another OpenAI-compatible gateway that models can be routed to (base URL + key)."""

    timeout_s: float = Field(default=180.0, gt=0)


#: the emulator's credentials for providers without real ones (they only open the local stand-in)
EMULATOR_API_KEYS: dict[str, str] = {
    "openai": EMULATOR_OPENAI_API_KEY,
    "gemini": "emulator-gemini-key",
    "ark": "emulator-ark-key",
    "bfl": "emulator-bfl-key",
    "relay": "emulator-relay-key",
}


BrokerKind = Literal["redis", "amqp"]

#: kombu transport names per broker kind (https://docs.celeryq.dev/projects/kombu/en/stable/userguide/connections.html)
BROKER_SCHEMES: dict[str, BrokerKind] = {
    "redis": "redis",
    "rediss": "redis",
    "amqp": "amqp",
    "amqps": "amqp",
    "pyamqp": "amqp",
}


def broker_kind_of(url: str) -> BrokerKind:
    """Which broker a URL names; anything but a redis(s):// or amqp(s):// URL with a host is refused."""
    parts = urlsplit(url)
    kind = BROKER_SCHEMES.get(parts.scheme.lower())
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        kind = None
    if kind is None or not parts.hostname:
        raise ValueError("must be a redis://, rediss://, amqp:// or amqps:// URL with a host")
    return kind


class Settings(BaseSettings):
    """Every setting of every process."""

    model_config = SettingsConfigDict(
        env_prefix="IMAGEJOBS_", env_nested_delimiter="__", env_ignore_empty=True, extra="ignore"
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    #: where Celery messages go: Redis (the default: ``redis_url``) or RabbitMQ (``amqp://user:pass@host:5672/vhost``)
    broker_url: str | None = None
    database_url: str = "sqlite:///var/imagejobs.db"
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(min_length=1)
    signing_key: SecretStr = Field(min_length=16)
    public_base_url: str = "http://127.0.0.1:8000"
    files_dir: Path = Path("var/files")
    file_url_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    sync_timeout_s: float = Field(default=60.0, ge=0, le=600)
    #: the explicit choice to serve providers without credentials from the emulator (``make run``, tests);
    #: unset: such providers are disabled
    emulator_url: str | None = None
    #: operators' catalog files (``*.toml``, the format of ``shared/catalog/models/``): new models and overrides
    catalog_dir: Path | None = None
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    #: Flower's basic auth (``FLOWER_BASIC_AUTH`` is ``flower_basic_auth()``); the password has no default
    flower_user: str = Field(default="admin", pattern=r"^[^:,\s]+$")
    flower_password: SecretStr | None = None
    #: ``json`` (one JSON object per line, for log collectors) or ``console`` (for people: ``make run``)
    log_format: Literal["json", "console"] = "json"

    celery: CelerySettings = CelerySettings()
    sweeper: SweeperSettings = SweeperSettings()
    egress: EgressSettings = EgressSettings()
    webhooks: WebhookSettings
    kling: KlingSettings = KlingSettings()
    openai: OpenAISettings = OpenAISettings()
    gemini: GeminiSettings = GeminiSettings()
    ark: ArkSettings = ArkSettings()
    bfl: BflSettings = BflSettings()
    relay: RelaySettings = RelaySettings()
    upstream: UpstreamSettings = UpstreamSettings()
    limits: LimitSettings = LimitSettings()
    callbacks: UpstreamCallbackSettings = UpstreamCallbackSettings()
    storage: StorageSettings = StorageSettings()
    retention: RetentionSettings = RetentionSettings()
    metrics: MetricsSettings = MetricsSettings()

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _keys_long_enough(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(len(key.get_secret_value()) < 16 for key in value):
            raise ValueError("every API key must have at least 16 characters")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        if value is not None:
            broker_kind_of(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _unset_providers_are_disabled_or_emulated(self) -> Self:
        for name, section in self.provider_sections().items():
            # a section with only extra channels has no "default" channel (and is not pointed at the emulator)
            if not section.has_credentials() and not section.channels:
                if self.emulator_url is None:
                    section._mode = "disabled"
                else:
                    section._mode = "emulated"
                    if isinstance(section, KlingSettings):
                        section.access_key = SecretStr(EMULATOR_KLING_ACCESS_KEY)
                        section.secret_key = SecretStr(EMULATOR_KLING_SECRET_KEY)
                    else:
                        section.api_key = SecretStr(EMULATOR_API_KEYS[name])
                    section.base_url = section.base_url or f"{self.emulator_url.rstrip('/')}/{name}"
            section.base_url = (section.base_url or section.real_base_url).rstrip("/")
            if not section.base_url and section.mode != "disabled":
                raise ValueError(f"{name}: base_url is required when credentials are set")
        self.public_base_url = self.public_base_url.rstrip("/")
        return self

    @model_validator(mode="after")
    def _storage_defaults_to_files_dir(self) -> Self:
        if self.storage.url is None:
            self.storage.url = f"file://{self.files_dir}"
        if self.storage.is_s3() and self.storage.presign and self.file_url_ttl_s > MAX_PRESIGN_TTL_S:
            raise ValueError(f"IMAGEJOBS_FILE_URL_TTL_S: presigned S3 URLs live at most {MAX_PRESIGN_TTL_S} s")
        return self

    @field_validator("flower_password")
    @classmethod
    def _flower_password_usable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and (len(value.get_secret_value()) < 8 or "," in value.get_secret_value()):
            raise ValueError("must have at least 8 characters and no comma")
        return value

    def broker(self) -> str:
        """The Celery broker URL: ``broker_url`` when set, else the Redis URL."""
        return self.broker_url or self.redis_url

    def broker_kind(self) -> BrokerKind:
        return broker_kind_of(self.broker_url) if self.broker_url else "redis"

    def flower_basic_auth(self) -> str | None:
        """``user:password`` for Flower's ``--basic-auth`` / ``FLOWER_BASIC_AUTH``; None without a password."""
        if self.flower_password is None:
            return None
        return f"{self.flower_user}:{self.flower_password.get_secret_value()}"

    def provider_sections(self) -> dict[str, ProviderSettings]:
        return {
            "kling": self.kling,
            "openai": self.openai,
            "gemini": self.gemini,
            "ark": self.ark,
            "bfl": self.bfl,
            "relay": self.relay,
        }


def provider_modes(settings: Settings) -> dict[str, ProviderMode]:
    """Every provider section's mode: live, emulated or disabled."""
    return {name: section.mode for name, section in settings.provider_sections().items()}


def load_settings() -> Settings:
    """Read settings from the environment; a bad value raises ``ConfigurationError`` naming it."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(_describe(error["loc"], error["msg"]) for error in exc.errors())
        raise ConfigurationError(f"invalid settings: {problems}") from None


def _describe(loc: tuple[int | str, ...], message: str) -> str:
    """``IMAGEJOBS_<PATH>: message``; a missing section names its required variables."""
    if not loc:  # a check across sections names its variables itself
        return message.removeprefix("Value error, ")
    name = "IMAGEJOBS_" + "__".join(str(part) for part in loc).upper()
    field = Settings.model_fields.get(str(loc[0])) if len(loc) == 1 else None
    section = field.annotation if field is not None else None
    if message == "Field required" and isinstance(section, type) and issubclass(section, BaseModel):
        required = [key for key, info in section.model_fields.items() if info.is_required()]
        return "; ".join(f"{name}__{key.upper()}: Field required" for key in required)
    return f"{name}: {message}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once); bad ones stop the process with one line naming the variable.

    Every process entry point (API factory, ``celery -A worker.app``, Flower, the CLI) reads its settings here, so
    a bad value never surfaces as a traceback: ``SystemExit`` with a message prints it to stderr and exits 1.
    """
    try:
        return load_settings()
    except ConfigurationError as exc:
        raise SystemExit(f"imagejobs: {exc}") from None
