"""``python -m emulator [--host H] [--port P] [--log-level L]``: serve the emulator with uvicorn.

Defaults come from ``EMULATOR_HOST`` (127.0.0.1), ``EMULATOR_PORT`` (9100) and ``EMULATOR_LOG_LEVEL`` (info).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import uvicorn

from emulator.app import create_app


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("EMULATOR_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("EMULATOR_PORT", "9100")))
    parser.add_argument("--log-level", default=os.environ.get("EMULATOR_LOG_LEVEL", "info"))
    parser.add_argument("--no-access-log", action="store_true", help="skip per-request log lines (benchmarks)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    uvicorn.run(
        create_app(),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=not args.no_access_log,
    )


if __name__ == "__main__":
    main()
