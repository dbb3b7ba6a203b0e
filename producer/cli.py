"""``imagejobs``: the command line (migrate, submit, jobs, show, cost, and the local stack)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import func
from sqlmodel import Session, col, select

from producer import localstack
from producer.enqueue import enqueue_job
from producer.keys import owner_id
from shared.config import get_settings
from shared.db.engine import make_engine
from shared.db.migrate import upgrade
from shared.db.tables import CostEntry, Job
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
    local = commands.add_parser("local", help="the local stack behind `make run` / `make test`")
    local.add_argument("action", choices=["run", "prepare"])
    args = parser.parse_args(argv)
    if args.command == "local":
        if args.action == "run":
            return run_local_stack()
        prepare_local_stack()
        return 0
    settings = get_settings()
    if args.command == "migrate":
        upgrade(settings.database_url)
        print(f"database at {settings.database_url} is up to date")
        return 0
    engine = make_engine(settings.database_url, pool_size=2)
    with Session(engine) as session:
        if args.command == "submit":
            fields = {"model": args.model, "prompt": args.prompt}
            fields.update({name: json.loads(value) for name, _, value in (p.partition("=") for p in args.param)})
            sender = TaskSender(make_celery(settings, main="cli"))
            owner = owner_id(settings.api_keys[0].get_secret_value())
            enqueued = enqueue_job(ImageRequest.model_validate(fields), session=session, owner=owner, sender=sender)
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


def prepare_local_stack() -> dict[str, str]:
    """Redis, secrets, migrations; returns the environment the processes run with."""
    env = dict(os.environ)
    env.update(localstack.ensure_local_secrets(env))
    env["IMAGEJOBS_REDIS_URL"] = localstack.ensure_redis(env)
    env.setdefault("IMAGEJOBS_DATABASE_URL", "sqlite:///var/imagejobs.db")
    # Procfile commands (uvicorn, celery, python) must come from this environment
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    subprocess.run([sys.executable, "-m", "producer.cli", "migrate"], env=env, check=True)
    return env


def run_local_stack() -> int:
    env = prepare_local_stack()
    api = f"http://127.0.0.1:{env.setdefault('IMAGEJOBS_API_PORT', '8000')}"
    flower = f"http://127.0.0.1:{env.setdefault('IMAGEJOBS_FLOWER_PORT', '5555')}"
    emulator = f"http://127.0.0.1:{env.setdefault('IMAGEJOBS_EMULATOR_PORT', '9100')}"
    env.setdefault("IMAGEJOBS_PUBLIC_BASE_URL", api)
    env.setdefault("IMAGEJOBS_EMULATOR_URL", emulator)
    # the quick start's webhook receiver demo runs on this machine: allow loopback callbacks here only
    env.setdefault("IMAGEJOBS_EGRESS__ALLOW_NETWORKS", '["127.0.0.0/8"]')
    env["FLOWER_BASIC_AUTH"] = f"admin:{env['IMAGEJOBS_FLOWER_PASSWORD']}"
    honcho = subprocess.Popen([sys.executable, "-m", "honcho", "start", "-f", "Procfile"], env=env)
    try:
        if _wait_healthy(f"{api}/healthz", honcho):
            _print_banner(env, api=api, flower=flower, emulator=emulator)
        return honcho.wait()
    except KeyboardInterrupt:
        return honcho.wait()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def _print_banner(env: dict[str, str], *, api: str, flower: str, emulator: str) -> None:
    key = env["IMAGEJOBS_API_KEYS"].split(",")[0]
    body = '{"model": "kling-image", "model_name": "kling-v2-1", "prompt": "a lighthouse at dusk"}'
    print(
        f"""
imagejobs is up
  API       {api}   (docs: {api}/docs)
  Flower    {flower}   (user admin, password {env["IMAGEJOBS_FLOWER_PASSWORD"]})
  Emulator  {emulator}   (stands in for every provider without real credentials)
  API key   {key}

Try it:
  curl -s {api}/v1/images/generations -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{body}'
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
