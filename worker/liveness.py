"""A worker liveness signal that fails when the worker cannot consume: a heartbeat file, and its probe.

``heartbeat_step`` makes a consumer bootstep: it starts after the task consumers (so the broker connection is up and
the queues are being consumed) and touches the file from the consumer's event loop every few seconds. When the
broker connection is lost, Celery restarts the consumer blueprint, which stops this step: the file is removed
until the consumer is back. When the event loop hangs, the file goes stale. Either way the probe fails.
(Bootsteps: https://docs.celeryq.dev/en/stable/userguide/extending.html#consumer-bootsteps)

``python -m worker.liveness PATH --max-age SECONDS`` is the probe (a container healthcheck, a Kubernetes
liveness/readiness ``exec``): exit 0 while the file is fresh, else 1 with one line saying why. It imports
nothing of Celery's, so it costs the pod little CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Final

#: how often the consumer touches the file; the probe's ``--max-age`` should be a few times this
TOUCH_INTERVAL_S: Final = 5.0


def heartbeat_step(path: Path) -> type[Any]:
    """The consumer bootstep touching ``path`` (``worker.app`` adds it when ``IMAGEJOBS_CELERY__HEARTBEAT_FILE``
    is set). Celery is imported here, not at the top, so the probe stays light."""
    from celery import bootsteps

    class Heartbeat(bootsteps.StartStopStep):
        name = "imagejobs.Heartbeat"
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self._timer_entry: Any = None

        def start(self, consumer: Any) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            self._timer_entry = consumer.timer.call_repeatedly(TOUCH_INTERVAL_S, path.touch)

        def stop(self, consumer: Any) -> None:  # noqa: ARG002 - the bootstep signature
            if self._timer_entry is not None:
                self._timer_entry.cancel()
                self._timer_entry = None
            path.unlink(missing_ok=True)

        shutdown = stop

    return Heartbeat


def problem(path: Path, *, max_age_s: float, now: float | None = None) -> str | None:
    """Why the worker is not consuming (None: it is)."""
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:
        return f"no heartbeat file {path}: the worker's consumer is not running"
    if age > max_age_s:
        return f"heartbeat {path} is {age:.0f}s old (> {max_age_s:.0f}s): the worker's event loop is stuck"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.liveness", description="worker liveness probe")
    parser.add_argument("path", type=Path, help="the worker's IMAGEJOBS_CELERY__HEARTBEAT_FILE")
    parser.add_argument("--max-age", type=float, default=6 * TOUCH_INTERVAL_S, help="seconds (default: 30)")
    args = parser.parse_args(argv)
    if (why := problem(args.path, max_age_s=args.max_age)) is not None:
        sys.stderr.write(f"{why}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
