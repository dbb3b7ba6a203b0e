"""imagejobs against the idiomatic FastAPI + SQLModel + Celery peer, same machine, same upstream, one invocation.

The peer harness lives outside this repository (``PEERS``: its ``run_peer.py``, ``loadgen.py``, ``upstream.py``
and the peer itself, run from its own virtualenv ``PEERS_VENV``). This script drives it for both systems and
adds two phases the harness has no phase for, then prints every figure as a ratio to the peer:

- **B1** accept path: accepted/s and CPU-ms per accept (closed loop, medians over ``--b1-repeats``).
- **B9** end to end (Kling-style upstream, webhooks on): highest sustained jobs/s and CPU-ms per job there.
- **B4** sync pass-through (ours only; the peer has no sync mode): added p50/p99 at 200 concurrent calls
  against the aiohttp floor measured in the same run, and CPU-ms per call.
- **B3** in-flight: ``--inflight-jobs`` async jobs against an upstream that takes 10 minutes, how many are
  in flight upstream once the submits settle, and the RSS of the whole system under test.
- **commits and Redis commands per job**: ``--commit-jobs`` jobs end to end on a private PostgreSQL
  (``pg_stat_database.xact_commit``) with the Redis command counter (``INFO stats``).

The machine is shared: absolute numbers drift; only the ratios of one run mean something.

    make bench                                    # PEERS=../shared/peers PEERS_VENV=/tmp/peers-venv by default
    .venv/bin/python bench/peers.py --peers /path/to/peers --b1-repeats 3 --out bench/last-run.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: the model each system is driven with (the peer takes any model name; ours needs Kling's variant)
OUR_EXTRA = {"model_name": "kling-v2"}


class HarnessMissing(SystemExit):
    pass


def find_harness(peers: Path, venv: Path) -> ModuleType:
    """The harness's ``run_peer`` module (stdlib only, importable from here); a clear exit when it is absent."""
    if not (peers / "run_peer.py").is_file():
        raise HarnessMissing(
            f"make bench: the peer harness is not at {peers} (no run_peer.py). It lives outside this repository; "
            "point PEERS at it, e.g. `make bench PEERS=/path/to/peers`. Nothing was measured."
        )
    if not (venv / "bin" / "python").exists():
        raise HarnessMissing(
            f"make bench: the peer virtualenv is not at {venv}. Set it up once as the harness README says:\n"
            f"  python3 -m venv {venv} && {venv}/bin/pip install -r {peers}/requirements-peers.txt\n"
            "or point PEERS_VENV at an existing one. Nothing was measured."
        )
    os.environ["PEERS_VENV"] = str(venv)
    spec = importlib.util.spec_from_file_location("run_peer", peers / "run_peer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def log(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def run_harness(args: argparse.Namespace, *, sut: str, phases: str, extra: Sequence[str]) -> dict[str, Any]:
    """One ``run_peer.py`` invocation; its summary JSON (stdout), its progress on our stderr."""
    command = [
        str(args.peers_venv / "bin" / "python"),
        str(args.peers / "run_peer.py"),
        "--sut",
        sut,
        "--phases",
        phases,
        *ports(args),
        *extra,
    ]
    if sut == "imagejobs":
        command += ["--project", str(ROOT), "--extra", json.dumps(OUR_EXTRA)]
    log("$", " ".join(command))
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, env=os.environ)
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def ports(args: argparse.Namespace) -> list[str]:
    return [
        "--redis-port",
        str(args.redis_port),
        "--upstream-port",
        str(args.upstream_port),
        "--api-port",
        str(args.api_port),
        "--pg-port",
        str(args.pg_port),
    ]


# ----------------------------------------------------------------------------------------------------- B3, commits
def stack_args(args: argparse.Namespace) -> argparse.Namespace:
    """The attributes the harness's stack classes read."""
    return argparse.Namespace(
        redis_port=args.redis_port,
        upstream_port=args.upstream_port,
        api_port=args.api_port,
        concurrency=16,
        project=str(ROOT),
    )


def tree_rss_mb(pids: Sequence[int]) -> float:
    """Resident memory of the given processes and all their descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        rss[int(entry.name)] = int(fields[21]) * PAGE_SIZE
    seen: set[int] = set()
    stack = list(pids)
    while stack:
        pid = stack.pop()
        if pid in seen or pid not in rss:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, []))
    return sum(rss[pid] for pid in seen) / 2**20


def post_jobs(args: argparse.Namespace, *, sut: str, run: str, count: int) -> list[str]:
    """``count`` async jobs with the load driver's prompt and callback tags; returns the accepted ids."""
    api, upstream = f"http://127.0.0.1:{args.api_port}", f"http://127.0.0.1:{args.upstream_port}"
    key = args.harness.KEY_LONG if sut == "imagejobs" else args.harness.KEY
    extra = OUR_EXTRA if sut == "imagejobs" else {}

    def one(client: httpx.Client, seq: int) -> str | None:
        body = {
            "model": "kling-image",
            "prompt": f"bench:{run}:{seq} a lighthouse at dusk",
            "async": True,
            "callback_url": f"{upstream}/hook?run={run}&seq={seq}",
            **extra,
        }
        answer = client.post(f"{api}/v1/images/generations", json=body, headers={"Authorization": f"Bearer {key}"})
        return str(answer.json()["id"]) if answer.status_code in (200, 201, 202) else None

    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda seq: one(client, seq), range(1, count + 1)))
    return [job_id for job_id in ids if job_id is not None]


def upstream_stats(args: argparse.Namespace, run: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"http://127.0.0.1:{args.upstream_port}/stats?run={run}", timeout=30).json()
    return stats


def wait_for(condition: Callable[[], bool], *, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(1.0)
    return condition()


def redis_commands(port: int) -> int:
    out = subprocess.run(["redis-cli", "-p", str(port), "info", "stats"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":")[1])
    raise RuntimeError("no total_commands_processed in INFO stats")


def inflight(args: argparse.Namespace, sut: str) -> dict[str, Any]:
    """B3: N async jobs against a 10-minute upstream; in flight upstream once submits settle, and RSS."""
    harness = args.harness
    make = harness.ImagejobsStack if sut == "imagejobs" else harness.Stack
    upstream = ["--median", "600", "--p95", "1200", "--status-latency", "0.05", "--submit-latency", "0.05"]
    stack = make(stack_args(args), worker=True, upstream_args=upstream, pg=None)
    stack.start()
    try:
        run = "b3" + uuid.uuid4().hex[:8]
        started = time.monotonic()
        accepted = post_jobs(args, sut=sut, run=run, count=args.inflight_jobs)
        wait_for(lambda: len(upstream_stats(args, run).get("jobs", {})) >= len(accepted), timeout_s=args.settle_s)
        in_flight = len(upstream_stats(args, run).get("jobs", {}))
        elapsed = time.monotonic() - started
        rss = tree_rss_mb(stack.pids())
    finally:
        stack.stop()
    result = {
        "accepted": len(accepted),
        "in_flight_upstream": in_flight,
        "rss_mb": round(rss, 1),
        "kb_per_job": round(rss * 1024 / max(in_flight, 1), 1),
        "seconds_to_settle": round(elapsed, 1),
    }
    log(f"B3 {sut}: {result}")
    return result


def commits_per_job(args: argparse.Namespace, sut: str) -> dict[str, Any]:
    """N jobs end to end on a private PostgreSQL: commits and Redis commands per job (until every webhook)."""
    harness = args.harness
    postgres = harness.Postgres(args.pg_port)
    postgres.start()
    database = "imagejobs" if sut == "imagejobs" else "idiomatic"
    make = harness.ImagejobsStack if sut == "imagejobs" else harness.Stack
    upstream = ["--median", "1", "--p95", "2", "--status-latency", "0.05", "--submit-latency", "0.05"]
    try:
        stack = make(stack_args(args), worker=True, upstream_args=upstream, pg=postgres)
        stack.start()
        try:
            run = "cm" + uuid.uuid4().hex[:8]
            time.sleep(2)  # PostgreSQL flushes a backend's statistics when it has been idle a moment
            commits0, redis0 = xact_commit(args.pg_port, database), redis_commands(args.redis_port)
            accepted = post_jobs(args, sut=sut, run=run, count=args.commit_jobs)
            delivered = wait_for(
                lambda: len(upstream_stats(args, run).get("hooks", {})) >= len(accepted), timeout_s=args.settle_s
            )
            time.sleep(2)
            commits1, redis1 = xact_commit(args.pg_port, database), redis_commands(args.redis_port)
        finally:
            stack.stop()
    finally:
        postgres.stop()
    jobs = max(len(accepted), 1)
    result = {
        "jobs": len(accepted),
        "all_webhooks_arrived": delivered,
        "commits_per_job": round((commits1 - commits0) / jobs, 2),
        "redis_cmds_per_job": round((redis1 - redis0) / jobs, 1),
    }
    log(f"commits {sut}: {result}")
    return result


def xact_commit(port: int, database: str) -> int:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as connection:
        row = connection.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,)).fetchone()
    assert row is not None, f"no database {database}"
    return int(row[0])


# ----------------------------------------------------------------------------------------------------- the table
def ratio(ours: float | None, peer: float | None) -> str:
    if ours is None or peer is None or peer == 0:
        return "n/a"
    return f"{ours / peer:.2f}×"


def table(results: dict[str, Any]) -> str:
    peer, ours = results["peer"], results["imagejobs"]
    b1p, b1o = peer.get("b1_closed", {}), ours.get("b1_closed", {})
    b9p, b9o = peer.get("b9_best") or {}, ours.get("b9_best") or {}
    b4 = ours.get("b4", {})
    lines = [
        "| scenario | idiomatic peer | imagejobs | ratio (ours / peer) |",
        "|---|---|---|---|",
        f"| B1 accepted/s (closed loop, 64 conns, median of {b1o.get('n')}) | {b1p.get('accepted_per_s')} | "
        f"{b1o.get('accepted_per_s')} | {ratio(b1o.get('accepted_per_s'), b1p.get('accepted_per_s'))} |",
        f"| B1 CPU-ms per accept | {b1p.get('cpu_ms_per_accept')} | {b1o.get('cpu_ms_per_accept')} | "
        f"{ratio(b1o.get('cpu_ms_per_accept'), b1p.get('cpu_ms_per_accept'))} |",
        f"| B1 p50 / p99 ms (closed loop) | {b1p.get('p50_ms')} / {b1p.get('p99_ms')} | "
        f"{b1o.get('p50_ms')} / {b1o.get('p99_ms')} | |",
        f"| B9 highest sustained jobs/s | {b9p.get('rate')} | {b9o.get('rate')} | "
        f"{ratio(b9o.get('rate'), b9p.get('rate'))} |",
        f"| B9 CPU-ms per job at that rate | {b9p.get('cpu_ms_per_job')} | {b9o.get('cpu_ms_per_job')} | "
        f"{ratio(b9o.get('cpu_ms_per_job'), b9p.get('cpu_ms_per_job'))} |",
        f"| B9 send→webhook lag p50 s (delivery after upstream done) | {b9p.get('delivery_lag_p50_s')} | "
        f"{b9o.get('delivery_lag_p50_s')} | |",
        f"| B9 Redis commands per job | {b9p.get('redis_cmds_per_job')} | {b9o.get('redis_cmds_per_job')} | "
        f"{ratio(b9o.get('redis_cmds_per_job'), b9p.get('redis_cmds_per_job'))} |",
    ]
    floor, gateway = b4.get("aiohttp", {}), b4.get("gateway", {})
    if gateway:
        lines.append(
            f"| B4 added p50 / p99 ms at 200 concurrent sync calls (aiohttp floor same run: "
            f"{floor.get('added_p50_ms')} / {floor.get('added_p99_ms')}) | — (no sync mode) | "
            f"{gateway.get('added_p50_ms')} / {gateway.get('added_p99_ms')} | "
            f"+{_minus(gateway.get('added_p99_ms'), floor.get('added_p99_ms'))} ms p99 over the floor |"
        )
        lines.append(f"| B4 CPU-ms per sync call | — | {gateway.get('sut_cpu_ms_per_call')} | |")
    b3p, b3o = peer.get("b3"), ours.get("b3")
    if b3p and b3o:
        lines.append(
            f"| B3 async jobs in flight upstream / RSS MB ({b3o['accepted']} sent, 10-min upstream) | "
            f"{b3p['in_flight_upstream']} / {b3p['rss_mb']} | {b3o['in_flight_upstream']} / {b3o['rss_mb']} | "
            f"{ratio(b3o['kb_per_job'], b3p['kb_per_job'])} RSS per in-flight job |"
        )
    cp, co = peer.get("commits"), ours.get("commits")
    if cp and co:
        lines.append(
            f"| commits per job (PostgreSQL, {co['jobs']} jobs end to end) | {cp['commits_per_job']} | "
            f"{co['commits_per_job']} | {ratio(co['commits_per_job'], cp['commits_per_job'])} |"
        )
        lines.append(
            f"| Redis commands per job (same run) | {cp['redis_cmds_per_job']} | {co['redis_cmds_per_job']} | "
            f"{ratio(co['redis_cmds_per_job'], cp['redis_cmds_per_job'])} |"
        )
    return "\n".join(lines)


def _minus(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None else f"{a - b:.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=Path, default=Path(os.environ.get("PEERS", ROOT.parent / "shared" / "peers")))
    parser.add_argument(
        "--peers-venv",
        type=Path,
        default=Path(os.environ.get("PEERS_VENV", Path(tempfile.gettempdir()) / "peers-venv")),
    )
    parser.add_argument("--phases", default="b1,b9,b4,b3,commits")
    parser.add_argument("--b1-repeats", type=int, default=3)
    parser.add_argument("--b1-duration", type=float, default=20)
    parser.add_argument("--peer-b9-rates", default="10,15,20,25,30,35")
    parser.add_argument("--our-b9-rates", default="10,20,30,40,60,80")
    parser.add_argument("--b9-duration", type=float, default=60)
    parser.add_argument("--b4-repeats", type=int, default=1)
    parser.add_argument("--b4-calls", type=int, default=1000)
    parser.add_argument("--inflight-jobs", type=int, default=1000)
    parser.add_argument("--commit-jobs", type=int, default=300)
    parser.add_argument("--settle-s", type=float, default=180)
    parser.add_argument("--redis-port", type=int, default=6390)
    parser.add_argument("--upstream-port", type=int, default=9100)
    parser.add_argument("--api-port", type=int, default=8100)
    parser.add_argument("--pg-port", type=int, default=5439)
    parser.add_argument("--out", type=Path, default=None, help="also write every figure here (JSON)")
    args = parser.parse_args(argv)
    try:
        args.harness = find_harness(args.peers.resolve(), args.peers_venv)
    except HarnessMissing as missing:
        print(missing.code, file=sys.stderr)
        return 2
    phases = set(args.phases.split(","))
    results: dict[str, Any] = {"peer": {}, "imagejobs": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    b1 = ["--repeats", str(args.b1_repeats), "--b1-duration", str(args.b1_duration)]
    b9 = ["--b9-repeats", "1", "--b9-duration", str(args.b9_duration)]
    harness_phases = ",".join(phase for phase in ("b1", "b9") if phase in phases)
    if harness_phases:
        results["peer"] |= run_harness(
            args, sut="idiomatic", phases=harness_phases, extra=[*b1, *b9, "--b9-rates", args.peer_b9_rates]
        )
        results["imagejobs"] |= run_harness(
            args, sut="imagejobs", phases=harness_phases, extra=[*b1, *b9, "--b9-rates", args.our_b9_rates]
        )
    if "b4" in phases:
        b4_knobs = ["--repeats", str(args.b4_repeats), "--b4-calls", str(args.b4_calls)]
        b4 = run_harness(args, sut="imagejobs", phases="b4", extra=b4_knobs)
        results["imagejobs"]["b4"] = b4.get("b4", {})
    for sut, key in (("idiomatic", "peer"), ("imagejobs", "imagejobs")):
        if "b3" in phases:
            results[key]["b3"] = inflight(args, sut)
        if "commits" in phases:
            results[key]["commits"] = commits_per_job(args, sut)
    results["table"] = table(results)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1, default=str))
    print(results["table"])
    print("\nmedians over the harness's repeats; the machine is shared with other work: compare the ratios.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
