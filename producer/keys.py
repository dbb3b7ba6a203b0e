"""API keys → tenants. Jobs belong to the key that created them; the key itself is never stored.

Two kinds of key, one tenant id (``job.owner``: the first 32 hex characters of the key's SHA-256):

- **bootstrap keys** from ``IMAGEJOBS_API_KEYS``: no row; compared in constant time; no limits unless
  ``IMAGEJOBS_LIMITS__BOOTSTRAP_REQUESTS_PER_MINUTE`` is set.
- **database keys** made by ``imagejobs keys create``: an ``api_key`` row holding the key's full SHA-256 (never
  the key), a display prefix, the limits (requests per minute, spend budget) and the tenant's webhook secret.

A database key's look-up is cached per process for ``IMAGEJOBS_LIMITS__KEY_CACHE_TTL_S`` (10 s by default), so
a request costs no database read for its key. ``imagejobs keys revoke`` also announces the revocation on Redis
(``KEY_REVOKED_CHANNEL``) and every API process drops that key from its cache at once; if the announcement is
lost (Redis down) the TTL still bounds it: a revoked key keeps working for at most that long.

The spend budget is checked by ``enqueue_job`` against what the tenant has committed **in the currency of the
job** (see ``check_spend_budget``): catalog prices are in several currencies (``USD``, Kling ``credits``) and
we keep no exchange rate between them, so a budget of 10 allows up to 10 of each.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from redis.exceptions import RedisError
from sqlalchemy import Engine
from sqlmodel import Session

from producer.http.errors import ApiError
from shared.db import api_keys_repo
from shared.db.tables import ApiKey, Job, utcnow
from shared.errors import ImageJobsError
from shared.webhook_secrets import new_webhook_secret

log = logging.getLogger(__name__)

#: Redis pub/sub channel carrying the SHA-256 (``key_hash``) of each key just revoked
KEY_REVOKED_CHANNEL = "imagejobs:key-revoked"

#: what every key made by ``imagejobs keys create`` starts with
KEY_PREFIX = "sk-ij-"
#: characters of a key shown in listings (the fixed prefix and 8 random ones)
DISPLAY_PREFIX_LENGTH = len(KEY_PREFIX) + 8


def owner_id(api_key: str) -> str:
    """A stable, non-reversible id for the key (what ``job.owner`` and ``api_key.id`` hold)."""
    return key_hash(api_key)[:32]


def key_hash(api_key: str) -> str:
    """The key's full SHA-256 in hex (what ``api_key.key_hash`` holds)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    """``sk-ij-`` + 43 URL-safe characters (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def display_prefix(api_key: str) -> str:
    return api_key[:DISPLAY_PREFIX_LENGTH]


@dataclass(frozen=True, slots=True)
class Tenant:
    """Who a request acts for, its request-rate limit (``None``: unlimited) and whether it has a spend budget.

    ``has_spend_budget`` is cached with the rest of the key (a budget is set when the key is made and never
    changed), so a tenant without one costs no database read to check it.
    """

    owner: str
    requests_per_minute: int | None = None
    has_spend_budget: bool = False


@dataclass(frozen=True, slots=True)
class Revoked:
    """A database key that exists but was revoked."""

    owner: str


#: what a presented key resolves to: a tenant, a revoked key, or nothing known
Resolution = Tenant | Revoked | None


class KeyRing:
    """The API keys allowed in; compares digests in constant time."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [hashlib.sha256(key.encode()).digest() for key in keys]

    def owner_of(self, presented: str) -> str | None:
        digest = hashlib.sha256(presented.encode()).digest()
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return owner_id(presented) if matched else None


class KeyDirectory:
    """Bootstrap keys first (constant time), then the database by key hash, with a short per-process cache.

    ``peek`` answers without I/O (bootstrap keys, fresh cache entries); ``resolve`` may read the database, so
    async callers run it in a thread. Both unknown and revoked answers are cached too, so a client retrying a
    bad key does not cost a database read per request; the cache holds at most ``max_entries`` keys.
    """

    def __init__(
        self,
        *,
        bootstrap: KeyRing,
        lookup: Callable[[str], Resolution],
        bootstrap_requests_per_minute: int | None = None,
        ttl_s: float = 10.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bootstrap = bootstrap
        self._lookup = lookup
        self._bootstrap_rpm = bootstrap_requests_per_minute
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, Resolution]] = OrderedDict()
        self._lock = threading.Lock()

    def peek(self, presented: str) -> tuple[bool, Resolution]:
        """(known, resolution) without I/O; ``known`` is False when the database must be asked."""
        owner = self._bootstrap.owner_of(presented)
        if owner is not None:
            return True, Tenant(owner, self._bootstrap_rpm)
        digest = key_hash(presented)
        with self._lock:
            entry = self._cache.get(digest)
            if entry is not None and entry[0] > self._clock():
                return True, entry[1]
        return False, None

    def forget(self, digest: str) -> None:
        """Drop the cached answer for the key whose SHA-256 is ``digest`` (it was just revoked)."""
        with self._lock:
            self._cache.pop(digest, None)

    def resolve(self, presented: str) -> Resolution:
        known, resolution = self.peek(presented)
        if known:
            return resolution
        digest = key_hash(presented)
        resolution = self._lookup(digest)
        if self._ttl_s > 0:
            with self._lock:
                self._cache[digest] = (self._clock() + self._ttl_s, resolution)
                self._cache.move_to_end(digest)
                while len(self._cache) > self._max_entries:
                    self._cache.popitem(last=False)
        return resolution


def database_lookup(engine: Engine) -> Callable[[str], Resolution]:
    """A ``KeyDirectory`` look-up reading ``api_key`` rows by key hash."""

    def lookup(digest: str) -> Resolution:
        with Session(engine) as session:
            row = api_keys_repo.find_by_hash(session=session, key_hash=digest)
        if row is None:
            return None
        if row.revoked_at is not None:
            return Revoked(row.id)
        return Tenant(row.id, row.requests_per_minute, has_spend_budget=row.spend_budget is not None)

    return lookup


def new_key_row(
    api_key: str,
    *,
    webhook_secret: str,
    name: str = "",
    requests_per_minute: int | None = None,
    spend_budget: Decimal | None = None,
) -> ApiKey:
    """The ``api_key`` row of a new key (the key itself is not in it)."""
    return ApiKey(
        id=owner_id(api_key),
        key_hash=key_hash(api_key),
        prefix=display_prefix(api_key),
        name=name,
        requests_per_minute=requests_per_minute,
        spend_budget=spend_budget,
        webhook_secret=webhook_secret,
    )


class KeyReferenceError(ImageJobsError, LookupError):
    """No key, or more than one, matches what the operator typed."""


def create_key(
    *, session: Session, name: str = "", requests_per_minute: int | None = None, spend_budget: Decimal | None = None
) -> tuple[str, ApiKey]:
    """A new key and its committed row; the key is returned once and stored nowhere."""
    api_key = new_api_key()
    row = new_key_row(
        api_key,
        webhook_secret=new_webhook_secret(),
        name=name,
        requests_per_minute=requests_per_minute,
        spend_budget=spend_budget,
    )
    api_keys_repo.insert_key(session=session, key=row)
    session.commit()
    return api_key, row


def find_key(*, session: Session, reference: str) -> ApiKey:
    """The key named by its id, its display prefix, or the key itself."""
    matches = api_keys_repo.find_by_reference(session=session, reference=reference, key_hash=key_hash(reference))
    if not matches:
        raise KeyReferenceError(f"no API key has the id or prefix {reference!r}")
    if len(matches) > 1:
        ids = ", ".join(row.id for row in matches)
        raise KeyReferenceError(f"{reference!r} matches several keys ({ids}): give the id")
    return matches[0]


def revoke_key(
    *,
    session: Session,
    reference: str,
    now: datetime | None = None,
    announce: Callable[[str], object] | None = None,
) -> tuple[ApiKey, bool]:
    """Revoke the key (committed), then ``announce`` its hash to the API processes' caches; the flag is False if
    it was already revoked. A failed announcement is logged: the cache TTL still ends the key's use."""
    row = find_key(session=session, reference=reference)
    changed = api_keys_repo.revoke(session=session, key_id=row.id, now=now or utcnow())
    session.commit()
    session.refresh(row)
    if announce is not None:
        try:
            announce(row.key_hash)
        except (RedisError, OSError) as exc:  # only delays the revocation to the cache TTL
            log.warning("key %s revoked, not announced (%s): API processes stop it within the cache TTL", row.id, exc)
    return row, changed


def rotate_webhook_secret(
    *, session: Session, reference: str, overlap: timedelta, now: datetime | None = None
) -> ApiKey:
    """A new webhook secret for the key; the current one keeps signing for ``overlap`` (committed)."""
    row = find_key(session=session, reference=reference)
    until = (now or utcnow()) + overlap if overlap > timedelta(0) else None
    api_keys_repo.rotate_webhook_secret(session=session, key=row, new_secret=new_webhook_secret(), previous_until=until)
    session.commit()
    session.refresh(row)
    return row


class SpendBudgetExceededError(ApiError):
    """The job's maximum cost would take the tenant past its spend budget (HTTP 402, nothing written)."""

    def __init__(self, message: str) -> None:
        super().__init__(402, message, param=None, code="insufficient_quota")


def check_spend_budget(*, session: Session, job: Job) -> None:
    """Refuse ``job`` if its tenant has a budget that its maximum cost would pass (see ``check_spend_budget_of``)."""
    check_spend_budget_of(session=session, owner=job.owner, jobs=[job])


def check_spend_budget_of(*, session: Session, owner: str, jobs: Sequence[Job]) -> None:
    """Refuse ``jobs`` (all of ``owner``) if their maximum cost would take the tenant past its budget.

    committed = recorded costs + maximum cost of the tenant's unfinished jobs + these jobs' maximum cost, per
    currency. The tenant's row is locked for the rest of the transaction, so concurrent submits of one tenant
    are checked one after the other; the caller commits right after (on refusal this rolls back).
    """
    row = api_keys_repo.lock_key(session=session, key_id=owner)
    if row is None or row.spend_budget is None:
        return
    budget = Decimal(row.spend_budget)
    asked: dict[str, Decimal] = {}
    for job in jobs:
        asked[job.currency] = asked.get(job.currency, Decimal(0)) + max_cost(job)
    for currency, these_jobs in asked.items():
        committed = api_keys_repo.committed_spend(session=session, owner=owner, currency=currency)
        if committed + these_jobs <= budget:
            continue
        session.rollback()
        log.info(
            "tenant %s refused %d job(s): budget %s %s, committed %s, these jobs up to %s",
            owner,
            len(jobs),
            budget.normalize(),
            currency,
            committed.normalize(),
            these_jobs.normalize(),
        )
        what = "This request" if len(jobs) == 1 else f"These {len(jobs)} requests"
        raise SpendBudgetExceededError(
            f"{what} could cost up to {these_jobs.normalize():f} {currency}; with {committed.normalize():f} "
            f"{currency} already committed it would exceed this API key's spend budget of "
            f"{budget.normalize():f} {currency}."
        )


def max_cost(job: Job) -> Decimal:
    """The most ``job`` can cost: its price snapshot per request, or per image times the images asked for."""
    unit = Decimal(job.unit_price)
    return unit if job.price_per == "request" else unit * job.image_count
