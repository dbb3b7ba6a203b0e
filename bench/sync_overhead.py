"""B4: what a sync generation costs through the gateway, against the aiohttp floor in the same run.

Runs the peer harness's ``b4`` phase for this checkout (started as its Procfile says, default settings): 200
concurrent sync ``POST /v1/images/generations`` (``response_format=b64_json``) to a 1 s upstream, then the same
load straight to the upstream with aiohttp. Prints the gateway's added latency (p50/p99 over the upstream's
1 s), the floor's, and the CPU of our processes per call. Absolute figures drift with the machine's load; the
comparison inside one run is what counts.

    PEERS_DIR=path/to/peers PEERS_VENV=/tmp/peers-venv .venv/bin/python bench/sync_overhead.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", default=os.environ.get("PEERS_DIR"), help="the peer harness (or $PEERS_DIR)")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--ports", default="16391,19191,18191", help="redis,upstream,api ports of the run")
    args = parser.parse_args()
    if not args.peers:
        parser.error("--peers (or PEERS_DIR) must name the peer harness directory")
    python = Path(os.environ.get("PEERS_VENV", Path(tempfile.gettempdir()) / "peers-venv")) / "bin" / "python"
    redis_port, upstream_port, api_port = args.ports.split(",")
    data = Path(os.environ.get("PEERS_DATA", Path(tempfile.gettempdir()) / "peers-data"))
    before = set((data / "results").glob("*-imagejobs-*.json")) if (data / "results").is_dir() else set()
    subprocess.run(
        [str(python), str(Path(args.peers) / "run_peer.py"), "--sut", "imagejobs", "--project", str(PROJECT),
         "--phases", "b4", "--repeats", "1", "--b4-concurrency", str(args.concurrency), "--b4-calls", str(args.calls),
         "--redis-port", redis_port, "--upstream-port", upstream_port, "--api-port", api_port],
        check=True,
    )  # fmt: skip
    results = sorted(set((data / "results").glob("*-imagejobs-*.json")) - before)
    runs = json.loads(results[-1].read_text())["b4"]
    floor = next(run for run in runs if run["client"] == "aiohttp")
    ours = next(run for run in runs if run["client"] == "gateway")
    print(f"B4 at {args.concurrency} concurrent sync calls, 1 s upstream ({results[-1].name})")
    print(f"  aiohttp floor : added p50 {floor['added_p50_ms']:8.1f} ms  p99 {floor['added_p99_ms']:8.1f} ms")
    print(
        f"  imagejobs     : added p50 {ours['added_p50_ms']:8.1f} ms  p99 {ours['added_p99_ms']:8.1f} ms"
        f"  {ours['calls_per_s']:.1f} calls/s  {ours['sut_cpu_ms_per_call']} CPU-ms per call  errors {ours['errors']}"
    )
    print(f"  p99 above the floor: {ours['added_p99_ms'] - floor['added_p99_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
