"""``imagejobs``: the command line (migrate, submit, jobs, cost, keys)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from redis import Redis
from sqlalchemy import func
from sqlmodel import Session, col, select

from producer import keys as api_keys
from producer.enqueue import enqueue_job
from producer.keys import owner_id
from shared.catalog import catalog_for
from shared.config import get_settings
from shared.db import api_keys_repo
from shared.db.engine import make_engine
from shared.db.migrate import upgrade
from shared.db.tables import ApiKey, CostEntry, Job
from shared.errors import ConfigurationError
from shared.jobs import ImageRequest
from shared.queue import TaskSender, make_celery


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagejobs", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="bring the database schema up to date")
    submit = commands.add_parser("submit", help="enqueue a job in-process (as the first API key)")
    submit.add_argument("model")
    submit.add_argument("prompt")
    submit.add_argument("--param", action="append", default=[], metavar="NAME=JSON", help="extra request field")
    jobs = commands.add_parser("jobs", help="list recent jobs")
    jobs.add_argument("--limit", type=int, default=20)
    commands.add_parser("cost", help="total cost per model and currency")
    _add_keys_commands(commands)
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except ConfigurationError as exc:  # one line naming the setting, no traceback
        print(f"imagejobs: {exc}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        upgrade(settings.database_url)
        print(f"database at {settings.database_url} is up to date")
        return 0
    engine = make_engine(settings.database_url, pool_size=2)
    if args.command == "keys":
        try:
            with Session(engine, expire_on_commit=False) as session:
                return run_keys_command(args, session)
        finally:
            engine.dispose()
    with Session(engine) as session:
        if args.command == "submit":
            fields = {"model": args.model, "prompt": args.prompt}
            fields.update({name: json.loads(value) for name, _, value in (p.partition("=") for p in args.param)})
            sender = TaskSender(make_celery(settings, main="cli"))
            owner = owner_id(settings.api_keys[0].get_secret_value())
            enqueued = enqueue_job(
                ImageRequest.model_validate(fields),
                session=session,
                owner=owner,
                sender=sender,
                catalog=catalog_for(settings),  # the operator's files, and providers without credentials refused
            )
            print(enqueued.job.id)
        elif args.command == "jobs":
            for job in session.exec(select(Job).order_by(col(Job.created_at).desc()).limit(args.limit)):
                print(f"{job.id}  {job.status:<10} {job.model:<16} polls={job.poll_count} {job.created_at:%F %T}")
        elif args.command == "cost":
            statement = select(CostEntry.model, CostEntry.currency, func.count(), func.sum(CostEntry.amount)).group_by(
                CostEntry.model, CostEntry.currency
            )
            for model, currency, count, total in session.exec(statement):
                print(f"{model:<24} {count:>6} jobs  {Decimal(total):>12} {currency}")
    engine.dispose()
    return 0


def _add_keys_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="API keys stored (hashed) in the database: create, list, revoke, …")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="make a key; it is printed once, with its webhook secret")
    create.add_argument("--name", default="", help="a label for listings")
    create.add_argument("--rpm", type=_positive_int, default=None, help="requests per minute (default: unlimited)")
    create.add_argument(
        "--budget",
        type=_budget,
        default=None,
        help="spend budget, checked in each catalog currency separately (USD, credits); default: unlimited",
    )
    actions.add_parser("list", help="every key: prefix, id, name, created, revoked, limits (never the key)")
    revoke = actions.add_parser("revoke", help="revoke a key (API processes stop accepting it within the cache TTL)")
    revoke.add_argument("key", metavar="PREFIX-OR-ID")
    rotate = actions.add_parser("rotate-webhook-secret", help="a new webhook secret; the old one signs for a while")
    rotate.add_argument("key", metavar="PREFIX-OR-ID")
    rotate.add_argument("--overlap-hours", type=float, default=24.0, help="how long the old secret also signs")


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _budget(value: str) -> Decimal:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal amount: {value!r}") from None
    if not amount.is_finite() or amount < 0 or amount >= Decimal(10) ** 12:
        raise argparse.ArgumentTypeError("must be a non-negative amount below 10^12")
    return amount.quantize(Decimal("0.000001"))


def _announce_revocation(key_hash: str) -> None:
    with Redis.from_url(get_settings().redis_url, socket_connect_timeout=2, socket_timeout=2) as redis:
        redis.publish(api_keys.KEY_REVOKED_CHANNEL, key_hash)


def run_keys_command(args: argparse.Namespace, session: Session) -> int:
    """``imagejobs keys …``; 1 (with a message on stderr) when the key named does not exist."""
    try:
        if args.keys_command == "create":
            key, row = api_keys.create_key(
                session=session, name=args.name, requests_per_minute=args.rpm, spend_budget=args.budget
            )
            print(f"API key: {key}")
            print("  shown once and stored nowhere (only its SHA-256 is kept): copy it now")
            print(f"  {_describe_key(row)}")
            print(f"Webhook secret: {row.webhook_secret}")
            print("  verifies the signatures of this key's webhooks (Standard Webhooks)")
        elif args.keys_command == "list":
            for row in api_keys_repo.list_keys(session=session):
                print(_describe_key(row))
        elif args.keys_command == "revoke":
            row, changed = api_keys.revoke_key(session=session, reference=args.key, announce=_announce_revocation)
            print(f"{'revoked' if changed else 'already revoked'}: {_describe_key(row)}")
        elif args.keys_command == "rotate-webhook-secret":
            overlap = timedelta(hours=max(args.overlap_hours, 0.0))
            row = api_keys.rotate_webhook_secret(session=session, reference=args.key, overlap=overlap)
            print(f"New webhook secret: {row.webhook_secret}")
            until = row.previous_secret_expires_at
            print(f"  the previous secret also signs until {until:%F %T} UTC" if until else "  the old one stopped")
    except api_keys.KeyReferenceError as exc:
        print(f"imagejobs keys: {exc}", file=sys.stderr)
        return 1
    return 0


def _describe_key(row: ApiKey) -> str:
    revoked = f"revoked {row.revoked_at:%F %T}" if row.revoked_at else "active"
    rpm = row.requests_per_minute if row.requests_per_minute is not None else "unlimited"
    budget = f"{Decimal(row.spend_budget).normalize():f}" if row.spend_budget is not None else "unlimited"
    return (
        f"{row.prefix:<16} id={row.id} name={row.name!r} created={row.created_at:%F %T} {revoked} "
        f"rpm={rpm} budget={budget}"
    )


if __name__ == "__main__":
    sys.exit(main())
