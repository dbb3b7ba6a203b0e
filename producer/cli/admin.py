"""The operator's commands, in-process on the database: ``migrate`` and ``keys create|list|revoke|rotate-…``.

They read the same settings as the API (``IMAGEJOBS_*``), filled in from what ``make run`` wrote in ``var/``
(``producer.cli.local_env``), so ``imagejobs keys list`` works on the local stack without any setup.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated

import typer
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from producer import keys as api_keys
from producer.cli.failures import CliError
from producer.cli.local_env import local_stack_defaults
from shared.config import Settings, load_settings
from shared.db import api_keys_repo
from shared.db.engine import make_engine
from shared.db.migrate import upgrade
from shared.db.tables import ApiKey
from shared.errors import ConfigurationError

keys_app = typer.Typer(help="API keys stored (hashed) in the database: create, list, revoke, …", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("migrate", help="Bring the database schema up to date.")(migrate)
    app.add_typer(keys_app, name="keys")


def admin_settings() -> Settings:
    """The settings, with the ``make run`` stack's values for what the environment leaves unset."""
    for name, value in local_stack_defaults(os.environ).items():
        os.environ.setdefault(name, value)
    try:
        return load_settings()
    except ConfigurationError as exc:  # one line naming the setting
        raise CliError(str(exc)) from None  # exit 1, as every process does on bad settings


def _shown(database_url: str) -> str:
    return make_url(database_url).render_as_string(hide_password=True)


@contextmanager
def database_session(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.database_url, pool_size=2)
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield session
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise CliError(f"database at {_shown(settings.database_url)}: {reason}") from None
    finally:
        engine.dispose()


def migrate() -> None:
    settings = admin_settings()
    try:
        upgrade(settings.database_url)
    except SQLAlchemyError as exc:
        raise CliError(f"cannot migrate the database at {_shown(settings.database_url)}: {exc}") from None
    print(f"database at {_shown(settings.database_url)} is up to date")


def _budget(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise typer.BadParameter(f"not a decimal amount: {value!r}") from None
    if not amount.is_finite() or amount < 0 or amount >= Decimal(10) ** 12:
        raise typer.BadParameter("must be a non-negative amount below 10^12")
    return amount.quantize(Decimal("0.000001"))


@keys_app.command("create", help="Make a key; it is printed once, with its webhook secret.")
def create_key(
    name: Annotated[str, typer.Option(help="a label for listings")] = "",
    rpm: Annotated[int | None, typer.Option(min=1, help="requests per minute (default: unlimited)")] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            callback=_budget,
            help="spend budget, checked in each catalog currency separately (USD, credits); default: unlimited",
        ),
    ] = None,
) -> None:
    amount = Decimal(budget) if budget is not None else None
    with database_session(admin_settings()) as session:
        key, row = api_keys.create_key(session=session, name=name, requests_per_minute=rpm, spend_budget=amount)
    print(f"API key: {key}")
    print("  shown once and stored nowhere (only its SHA-256 is kept): copy it now")
    print(f"  {describe_key(row)}")
    print(f"Webhook secret: {row.webhook_secret}")
    print("  verifies the signatures of this key's webhooks (Standard Webhooks)")


@keys_app.command("list", help="Every key: prefix, id, name, created, revoked, limits (never the key).")
def list_keys() -> None:
    with database_session(admin_settings()) as session:
        rows = api_keys_repo.list_keys(session=session)
    for row in rows:
        print(describe_key(row))


@keys_app.command("revoke", help="Revoke a key (API processes stop accepting it within the cache TTL).")
def revoke_key(key: Annotated[str, typer.Argument(metavar="PREFIX-OR-ID")]) -> None:
    settings = admin_settings()
    with _known_key(), database_session(settings) as session:
        row, changed = api_keys.revoke_key(session=session, reference=key, announce=_announcer(settings))
    print(f"{'revoked' if changed else 'already revoked'}: {describe_key(row)}")


@keys_app.command("rotate-webhook-secret", help="A new webhook secret; the old one signs for a while.")
def rotate_webhook_secret(
    key: Annotated[str, typer.Argument(metavar="PREFIX-OR-ID")],
    overlap_hours: Annotated[float, typer.Option(help="how long the old secret also signs")] = 24.0,
) -> None:
    overlap = timedelta(hours=max(overlap_hours, 0.0))
    with _known_key(), database_session(admin_settings()) as session:
        row = api_keys.rotate_webhook_secret(session=session, reference=key, overlap=overlap)
    print(f"New webhook secret: {row.webhook_secret}")
    until = row.previous_secret_expires_at
    print(f"  the previous secret also signs until {until:%F %T} UTC" if until else "  the old one stopped")


@contextmanager
def _known_key() -> Iterator[None]:
    try:
        yield
    except api_keys.KeyReferenceError as exc:
        raise CliError(f"keys: {exc}") from None


def _announcer(settings: Settings) -> Callable[[str], None]:
    def announce(key_hash: str) -> None:
        try:
            with Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2) as redis:
                redis.publish(api_keys.KEY_REVOKED_CHANNEL, key_hash)
        except (RedisError, OSError):  # revoked in the database all the same: API caches expire within their TTL
            print("  (Redis did not answer: API processes notice within their key cache TTL)")

    return announce


def describe_key(row: ApiKey) -> str:
    revoked = f"revoked {row.revoked_at:%F %T}" if row.revoked_at else "active"
    rpm = row.requests_per_minute if row.requests_per_minute is not None else "unlimited"
    budget = f"{Decimal(row.spend_budget).normalize():f}" if row.spend_budget is not None else "unlimited"
    return (
        f"{row.prefix:<16} id={row.id} name={row.name!r} created={row.created_at:%F %T} {revoked} "
        f"rpm={rpm} budget={budget}"
    )
