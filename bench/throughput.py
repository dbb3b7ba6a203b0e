"""End-to-end throughput and CPU per job of the whole stack on this machine.

Starts a private Redis, the emulator, the API and one worker (threads pool) as processes, submits N async
jobs over HTTP with a fixed concurrency, waits until every job is terminal, and prints: accept rate,
completion rate, CPU-ms per job of the system under test (API + worker; not the emulator or the load
generator), database commits per job (PostgreSQL) and Redis commands per job. Repeats and prints medians.

    .venv/bin/python bench/throughput.py --jobs 400 --model gpt-image-1 --repeats 3
    .venv/bin/python bench/throughput.py --jobs 200 --model kling-image --kling-latency 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devstack.services import start_private_redis
from shared.db.migrate import upgrade
from tests.support import (
    API_KEY,
    Process,
    api_command,
    base_env,
    celery_worker_command,
    emulator_command,
    free_port,
    http_ok,
    wait_until,
)

PG_ADMIN = os.environ.get("IMAGEJOBS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its live descendants."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        process_group = int(fields[2])
        if process_group == pid:  # our children run in their own session / process group
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def body_for(model: str) -> dict[str, object]:
    if model == "kling-image":
        return {"model": model, "model_name": "kling-v2-1", "prompt": "bench", "async": True}
    return {"model": model, "prompt": "bench", "async": True}


async def submit_all(api: str, jobs: int, concurrency: int, model: str) -> float:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(jobs):
        queue.put_nowait(index)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=api, headers=headers, limits=limits, timeout=60) as client:

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                response = await client.post("/v1/images/generations", json=body_for(model))
                assert response.status_code == 202, response.text

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def commits(url: str) -> int:
    with psycopg.connect(url) as connection:
        row = connection.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        return int(row[0]) if row else 0


def terminal_count(url: str) -> int:
    with psycopg.connect(url) as connection:
        row = connection.execute(
            "SELECT count(*) FROM job WHERE status IN ('succeeded','failed','timed_out','cancelled')"
        ).fetchone()
        return int(row[0]) if row else 0


def run_once(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    name = f"imagejobs_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    database_url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    upgrade(database_url)
    redis_port, emulator_port, api_port = free_port(), free_port(), free_port()
    redis_process = start_private_redis(workdir / name / "redis", port=redis_port, appendonly=True)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    env = base_env(
        redis_url=redis_url,
        database_url=database_url,
        files_dir=workdir / name / "files",
        emulator_url=emulator_url,
        IMAGEJOBS_CELERY__TASK_EVENTS="false",
        IMAGEJOBS_SWEEPER__INTERVAL_S="15",
        IMAGEJOBS_PUBLIC_BASE_URL=f"http://127.0.0.1:{api_port}",
        IMAGEJOBS_LOG_LEVEL="WARNING",
    )
    logs = workdir / name
    processes = [Process("emulator", [*emulator_command(emulator_port), "--no-access-log"], env=env, log_dir=logs)]
    try:
        wait_until(lambda: http_ok(f"{emulator_url}/_emulator/health"), timeout_s=20)
        latency = {"latency": {"kind": "fixed", "value_s": 0}}
        kling = {"latency": {"kind": "fixed", "value_s": args.kling_latency}}
        httpx.put(f"{emulator_url}/_emulator/config", json={"openai": latency, "kling": kling}).raise_for_status()
        api = Process(
            "api", [*api_command(api_port), "--no-access-log", "--log-level", "warning"], env=env, log_dir=logs
        )
        worker = Process(
            "worker", [*celery_worker_command(args.concurrency), "--loglevel", "WARNING"], env=env, log_dir=logs
        )
        processes += [api, worker]
        wait_until(lambda: http_ok(f"http://127.0.0.1:{api_port}/healthz"), timeout_s=30)
        time.sleep(2)
        redis = Redis.from_url(redis_url)
        redis.config_resetstat()
        cpu_before = cpu_seconds(api.popen.pid) + cpu_seconds(worker.popen.pid)
        commits_before = commits(database_url)
        started = time.perf_counter()
        accept_s = asyncio.run(submit_all(f"http://127.0.0.1:{api_port}", args.jobs, args.http_concurrency, args.model))
        wait_until(lambda: terminal_count(database_url) >= args.jobs, timeout_s=600, interval_s=0.2)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(api.popen.pid) + cpu_seconds(worker.popen.pid) - cpu_before
        redis_commands = sum(
            int(stats["calls"]) for stats in redis.info("commandstats").values() if isinstance(stats, dict)
        )
        return {
            "accepted_per_s": args.jobs / accept_s,
            "completed_per_s": args.jobs / elapsed,
            "cpu_ms_per_job": cpu * 1000 / args.jobs,
            "commits_per_job": (commits(database_url) - commits_before) / args.jobs,
            "redis_commands_per_job": redis_commands / args.jobs,
        }
    finally:
        for process in reversed(processes):
            process.stop()
        redis_process.terminate()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--model", default="gpt-image-1", choices=["gpt-image-1", "kling-image"])
    parser.add_argument("--kling-latency", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=32, help="worker threads")
    parser.add_argument("--http-concurrency", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_once(args, Path(tmp)) for _ in range(args.repeats)]
    print(f"imagejobs, {args.model}, {args.jobs} jobs x {args.repeats} runs (PostgreSQL, medians):")
    for metric in runs[0]:
        values = [run[metric] for run in runs]
        print(f"  {metric:<24} {statistics.median(values):9.2f}   (runs: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
