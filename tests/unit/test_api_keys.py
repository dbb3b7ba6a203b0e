"""API keys: hashing, the key directory and its cache, the spend budget in ``enqueue_job``, ``imagejobs keys``."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from producer import cli
from producer.enqueue import enqueue_job
from producer.keys import (
    DISPLAY_PREFIX_LENGTH,
    KEY_PREFIX,
    KeyDirectory,
    KeyReferenceError,
    KeyRing,
    Resolution,
    Revoked,
    SpendBudgetExceededError,
    Tenant,
    create_key,
    database_lookup,
    find_key,
    key_hash,
    new_api_key,
    new_key_row,
    owner_id,
    revoke_key,
    rotate_webhook_secret,
)
from shared.config import get_settings
from shared.db import api_keys_repo, jobs_repo
from shared.db.engine import make_engine
from shared.db.tables import ApiKey, Job
from shared.jobs import ImageRequest, JobStatus
from shared.webhook_secrets import PREFIX as WHSEC_PREFIX
from tests.fakes import RecordingSender
from tests.support import API_KEY, OTHER_API_KEY, SIGNING_KEY, WEBHOOK_SECRET

GPT = {"model": "gpt-image-1", "prompt": "a lighthouse at dusk"}  # 0.06336 USD per image (auto: medium, non-square)
GPT_HIGH = {"model": "gpt-image-1", "prompt": "a lighthouse at dusk", "quality": "high", "size": "1024x1024"}
# 0.1664 USD per image
KLING = {"model": "kling-image", "model_name": "kling-v2-1", "prompt": "a red fox"}  # 0.076 credits per image
SEEDREAM = {"model": "doubao-seedream-4-5-251128", "prompt": "a red fox"}  # 0.06 USD per request


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingLookup:
    """A database stand-in: answers from a dict and counts the look-ups."""

    def __init__(self, answers: dict[str, Resolution]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, digest: str) -> Resolution:
        self.calls.append(digest)
        return self.answers.get(digest)


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    made = make_engine(sqlite_url, pool_size=2)
    yield made
    made.dispose()


def _session(engine: Engine) -> Session:
    return Session(engine, expire_on_commit=False)


# -- key material ------------------------------------------------------------------------------------


def test_owner_id_and_key_hash_are_the_keys_sha256() -> None:
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()

    assert key_hash(API_KEY) == digest
    assert owner_id(API_KEY) == digest[:32]


def test_new_keys_are_random_and_their_row_holds_no_key() -> None:
    first, second = new_api_key(), new_api_key()

    assert first != second
    assert first.startswith(KEY_PREFIX) and len(first) == len(KEY_PREFIX) + 43
    row = new_key_row(first, webhook_secret="whsec_x", name="ci", requests_per_minute=5, spend_budget=Decimal(3))
    assert (row.id, row.key_hash, row.prefix) == (owner_id(first), key_hash(first), first[:DISPLAY_PREFIX_LENGTH])
    assert first not in row.model_dump_json()


# -- the key directory -----------------------------------------------------------------------------


def _directory(lookup: CountingLookup, clock: Clock, **kwargs: Any) -> KeyDirectory:
    return KeyDirectory(bootstrap=KeyRing([API_KEY]), lookup=lookup, clock=clock, **kwargs)


def test_a_bootstrap_key_resolves_without_the_database_and_gets_the_bootstrap_limit() -> None:
    lookup = CountingLookup({})
    directory = _directory(lookup, Clock(), bootstrap_requests_per_minute=7)

    assert directory.peek(API_KEY) == (True, Tenant(owner_id(API_KEY), 7))
    assert directory.resolve(API_KEY) == Tenant(owner_id(API_KEY), 7)
    assert lookup.calls == []


def test_a_database_key_is_read_once_per_ttl() -> None:
    # Given a database key with a limit of 30 requests per minute and a 10 s cache
    key = new_api_key()
    lookup = CountingLookup({key_hash(key): Tenant(owner_id(key), 30)})
    clock = Clock()
    directory = _directory(lookup, clock, ttl_s=10.0)

    # When it is presented several times within the TTL
    assert directory.peek(key) == (False, None)
    for _ in range(5):
        assert directory.resolve(key) == Tenant(owner_id(key), 30)
        clock.now += 1.0

    # Then the database was read once, and the cache answers without I/O
    assert lookup.calls == [key_hash(key)]
    assert directory.peek(key) == (True, Tenant(owner_id(key), 30))
    # and after the TTL it is read again
    clock.now += 10.0
    assert directory.peek(key) == (False, None)
    directory.resolve(key)
    assert len(lookup.calls) == 2


def test_a_revocation_takes_effect_once_the_cached_answer_expires() -> None:
    key = new_api_key()
    digest = key_hash(key)
    lookup = CountingLookup({digest: Tenant(owner_id(key))})
    clock = Clock()
    directory = _directory(lookup, clock, ttl_s=10.0)
    assert directory.resolve(key) == Tenant(owner_id(key))

    lookup.answers[digest] = Revoked(owner_id(key))
    clock.now += 9.0
    assert directory.resolve(key) == Tenant(owner_id(key))  # within the TTL: still the cached answer
    clock.now += 1.5
    assert directory.resolve(key) == Revoked(owner_id(key))


def test_unknown_keys_are_cached_too_and_the_cache_is_bounded() -> None:
    lookup = CountingLookup({})
    clock = Clock()
    directory = _directory(lookup, clock, ttl_s=10.0, max_entries=3)

    assert directory.resolve("sk-unknown-0000000000000000") is None
    assert directory.resolve("sk-unknown-0000000000000000") is None
    assert len(lookup.calls) == 1
    for index in range(1, 5):
        directory.resolve(f"sk-unknown-{index:016d}")
    # the oldest entry was dropped to keep three
    assert directory.peek("sk-unknown-0000000000000000") == (False, None)
    assert directory.peek("sk-unknown-0000000000000004") == (True, None)


def test_a_zero_ttl_reads_the_database_every_time() -> None:
    key = new_api_key()
    lookup = CountingLookup({key_hash(key): Tenant(owner_id(key))})
    directory = _directory(lookup, Clock(), ttl_s=0.0)

    directory.resolve(key)
    directory.resolve(key)

    assert len(lookup.calls) == 2


def test_the_database_lookup_finds_keys_by_hash_and_sees_revocations(engine: Engine) -> None:
    with _session(engine) as session:
        key, row = create_key(session=session, name="ci", requests_per_minute=12)
    lookup = database_lookup(engine)

    assert lookup(key_hash(key)) == Tenant(row.id, 12)
    assert lookup(key_hash("sk-ij-not-a-key")) is None
    with _session(engine) as session:
        revoke_key(session=session, reference=row.prefix)
    assert lookup(key_hash(key)) == Revoked(row.id)


# -- key management ------------------------------------------------------------------------------------


def test_a_created_key_stores_only_its_hash_and_gets_its_own_webhook_secret(engine: Engine) -> None:
    with _session(engine) as session:
        key, row = create_key(session=session, name="billing", requests_per_minute=60, spend_budget=Decimal("2.5"))
        _, other = create_key(session=session)

    with _session(engine) as session:
        stored = session.get(ApiKey, owner_id(key))
    assert stored is not None
    assert (stored.key_hash, stored.prefix, stored.name) == (key_hash(key), key[:DISPLAY_PREFIX_LENGTH], "billing")
    assert (stored.requests_per_minute, stored.spend_budget, stored.revoked_at) == (60, Decimal("2.5"), None)
    assert key not in stored.model_dump_json()
    assert stored.webhook_secret.startswith(WHSEC_PREFIX) and stored.webhook_secret != other.webhook_secret
    assert row.id == stored.id


def test_keys_are_found_by_id_prefix_or_the_key_itself(engine: Engine) -> None:
    with _session(engine) as session:
        key, row = create_key(session=session)
        for reference in (row.id, row.prefix, key):
            assert find_key(session=session, reference=reference).id == row.id
        with pytest.raises(KeyReferenceError, match="no API key"):
            find_key(session=session, reference="sk-ij-nothing")


def test_an_ambiguous_prefix_is_refused(engine: Engine) -> None:
    with _session(engine) as session:
        for key in ("sk-ij-same1234" + "a" * 35, "sk-ij-same1234" + "b" * 35):
            api_keys_repo.insert_key(session=session, key=new_key_row(key, webhook_secret="whsec_x"))
        session.commit()
        with pytest.raises(KeyReferenceError, match="several keys"):
            find_key(session=session, reference="sk-ij-same1234")


def test_rotating_the_webhook_secret_keeps_the_old_one_for_the_overlap(engine: Engine) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with _session(engine) as session:
        _, row = create_key(session=session)
        first = row.webhook_secret
        rotated = rotate_webhook_secret(session=session, reference=row.id, overlap=timedelta(hours=24), now=now)
        assert rotated.webhook_secret not in (first, None)
        assert rotated.previous_webhook_secret == first
        assert rotated.previous_secret_expires_at == now + timedelta(hours=24)

        second = rotated.webhook_secret
        again = rotate_webhook_secret(session=session, reference=row.id, overlap=timedelta(0), now=now)
        assert again.webhook_secret != second
        assert (again.previous_webhook_secret, again.previous_secret_expires_at) == (None, None)


# -- the spend budget ---------------------------------------------------------------------------------


def _budgeted_owner(engine: Engine, budget: str | None) -> str:
    with _session(engine) as session:
        _, row = create_key(session=session, spend_budget=Decimal(budget) if budget is not None else None)
    return row.id


def _enqueue(engine: Engine, owner: str, body: dict[str, Any]) -> Job:
    with _session(engine) as session:
        enqueued = enqueue_job(
            ImageRequest.model_validate(body), session=session, owner=owner, sender=RecordingSender()
        )
    return enqueued.job


def _job_count(engine: Engine) -> int:
    with _session(engine) as session:
        return len(session.exec(select(Job)).all())


def test_jobs_are_accepted_until_their_maximum_cost_would_pass_the_budget(engine: Engine) -> None:
    # Given a key with a budget of 0.45 USD and jobs of at most 2 × 0.1664 = 0.3328 USD
    owner = _budgeted_owner(engine, "0.45")
    _enqueue(engine, owner, {**GPT_HIGH, "n": 2})

    # When a second such job would commit 0.668 USD
    with pytest.raises(SpendBudgetExceededError) as refused:
        _enqueue(engine, owner, {**GPT_HIGH, "n": 2})

    # Then it is refused with 402 insufficient_quota and nothing is written
    assert (refused.value.status, refused.value.code, refused.value.param) == (402, "insufficient_quota", None)
    assert "0.3328 USD" in refused.value.message and "0.45 USD" in refused.value.message
    assert _job_count(engine) == 1
    # while a job that still fits is accepted (0.3328 + 0.1664 = 0.4992 > 0.45, but 0.3328 + 0.06336 fits)
    with pytest.raises(SpendBudgetExceededError):
        _enqueue(engine, owner, GPT_HIGH)
    _enqueue(engine, owner, GPT)
    assert _job_count(engine) == 2


def test_a_job_exactly_at_the_budget_is_accepted(engine: Engine) -> None:
    owner = _budgeted_owner(engine, "0.3328")

    _enqueue(engine, owner, {**GPT_HIGH, "n": 2})

    assert _job_count(engine) == 1


def test_recorded_costs_count_and_failed_jobs_do_not(engine: Engine) -> None:
    # Given a key with a budget of 0.4 USD and a pending job of at most 2 × 0.1664 = 0.3328 USD
    owner = _budgeted_owner(engine, "0.4")
    first = _enqueue(engine, owner, {**GPT_HIGH, "n": 2})
    with pytest.raises(SpendBudgetExceededError):
        _enqueue(engine, owner, GPT_HIGH)  # 0.3328 pending + 0.1664 > 0.4

    # When that job ends without images (it costs nothing), the budget is free again
    with _session(engine) as session, session.begin():
        assert jobs_repo.transition(session=session, job_id=first.id, from_=JobStatus.QUEUED, to=JobStatus.CANCELLED)
    second = _enqueue(engine, owner, {**GPT_HIGH, "n": 2})

    # And when a job succeeds, its recorded cost (one image of the two asked for) replaces its maximum
    with _session(engine) as session, session.begin():
        job = session.get(Job, second.id)
        assert job is not None
        assert jobs_repo.transition(session=session, job_id=job.id, from_=JobStatus.QUEUED, to=JobStatus.SUBMITTING)
        assert jobs_repo.transition(session=session, job_id=job.id, from_=JobStatus.SUBMITTING, to=JobStatus.SUCCEEDED)
        jobs_repo.record_cost(session=session, job=job, quantity=1)
    with _session(engine) as session:
        assert api_keys_repo.committed_spend(session=session, owner=owner, currency="USD") == Decimal("0.1664")
    _enqueue(engine, owner, GPT_HIGH)  # 0.1664 recorded + 0.1664 ≤ 0.4
    with pytest.raises(SpendBudgetExceededError):
        _enqueue(engine, owner, GPT_HIGH)  # 0.1664 + 0.1664 pending + 0.1664 > 0.4
    assert _job_count(engine) == 3


def test_the_budget_applies_to_each_currency_separately(engine: Engine) -> None:
    # Given a key with a budget of 0.2 that committed 0.1664 USD
    owner = _budgeted_owner(engine, "0.2")
    _enqueue(engine, owner, GPT_HIGH)

    # Then a Kling job priced in credits still fits (0.076 credits), twice, but not three times
    _enqueue(engine, owner, KLING)
    _enqueue(engine, owner, KLING)
    with pytest.raises(SpendBudgetExceededError, match="credits"):
        _enqueue(engine, owner, KLING)


def test_per_request_prices_count_once_whatever_n(engine: Engine) -> None:
    owner = _budgeted_owner(engine, "0.1")

    job = _enqueue(engine, owner, SEEDREAM)

    assert (job.price_per, job.unit_price) == ("request", Decimal("0.06"))
    with pytest.raises(SpendBudgetExceededError, match=r"0\.06 USD"):
        _enqueue(engine, owner, SEEDREAM)


@pytest.mark.parametrize("budget", [None, "0"], ids=["no-budget", "zero-budget"])
def test_keys_without_a_budget_or_row_are_not_limited_and_zero_refuses_everything(
    engine: Engine, budget: str | None
) -> None:
    owner = _budgeted_owner(engine, budget)

    if budget is None:
        for _ in range(3):
            _enqueue(engine, owner, {**GPT_HIGH, "n": 10})
        _enqueue(engine, owner_id(API_KEY), {**GPT_HIGH, "n": 10})  # a bootstrap key: no row, no budget
        assert _job_count(engine) == 4
    else:
        with pytest.raises(SpendBudgetExceededError):
            _enqueue(engine, owner, GPT)
        assert _job_count(engine) == 0


def test_a_repeated_external_task_id_is_not_refused_by_the_budget(engine: Engine) -> None:
    owner = _budgeted_owner(engine, "0.2")
    first = _enqueue(engine, owner, {**GPT_HIGH, "external_task_id": "order-1"})

    again = _enqueue(engine, owner, {**GPT_HIGH, "external_task_id": "order-1"})

    assert again.id == first.id


# -- imagejobs keys ---------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> Iterator[str]:
    monkeypatch.setenv("IMAGEJOBS_API_KEYS", f"{API_KEY},{OTHER_API_KEY}")
    monkeypatch.setenv("IMAGEJOBS_SIGNING_KEY", SIGNING_KEY)
    monkeypatch.setenv("IMAGEJOBS_WEBHOOKS__SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("IMAGEJOBS_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    yield sqlite_url
    get_settings.cache_clear()


def _rows(database_url: str) -> list[ApiKey]:
    engine = make_engine(database_url, pool_size=1)
    try:
        with Session(engine) as session:
            return list(session.exec(select(ApiKey)).all())
    finally:
        engine.dispose()


def test_keys_create_prints_the_key_once_and_list_never_shows_it(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["keys", "create", "--name", "ci", "--rpm", "30", "--budget", "12.5"]) == 0
    created = capsys.readouterr().out
    key = next(line.split(": ", 1)[1] for line in created.splitlines() if line.startswith("API key: "))
    secret = next(line.split(": ", 1)[1] for line in created.splitlines() if line.startswith("Webhook secret: "))
    [row] = _rows(cli_env)
    assert (row.id, row.name, row.requests_per_minute, row.spend_budget) == (owner_id(key), "ci", 30, Decimal("12.5"))
    assert row.webhook_secret == secret

    assert cli.main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert row.prefix in listed and row.id in listed and "rpm=30" in listed and "budget=12.5" in listed
    assert "active" in listed
    assert key not in listed and secret not in listed


def test_keys_revoke_and_rotate_by_prefix(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keys", "create"]) == 0
    capsys.readouterr()
    [row] = _rows(cli_env)

    assert cli.main(["keys", "rotate-webhook-secret", row.prefix, "--overlap-hours", "2"]) == 0
    rotated = capsys.readouterr().out
    [after] = _rows(cli_env)
    assert f"New webhook secret: {after.webhook_secret}" in rotated
    assert after.previous_webhook_secret == row.webhook_secret

    assert cli.main(["keys", "revoke", row.prefix]) == 0
    assert "revoked" in capsys.readouterr().out
    [revoked] = _rows(cli_env)
    assert revoked.revoked_at is not None
    assert cli.main(["keys", "revoke", row.id]) == 0
    assert "already revoked" in capsys.readouterr().out
    assert cli.main(["keys", "list"]) == 0
    assert "revoked 20" in capsys.readouterr().out


def test_keys_commands_refuse_unknown_references_and_bad_limits(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["keys", "revoke", "sk-ij-missing"]) == 1
    assert "no API key" in capsys.readouterr().err
    for bad in (["--rpm", "0"], ["--budget", "lots"], ["--budget", "-1"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(["keys", "create", *bad])
        assert exited.value.code == 2
    assert _rows(cli_env) == []
