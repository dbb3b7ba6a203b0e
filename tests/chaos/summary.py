"""The chaos suite's tally: each chaos test's numbers, summed in one section at the end of ``make test``.

A pytest plugin (registered by ``tests/conftest.py``), because the tally has to be made where the terminal is:
under pytest-xdist the tests run in worker processes and only the controller prints the summary, so a test's
numbers travel with its report as a user property (xdist serializes ``user_properties`` along with the report,
https://pytest-xdist.readthedocs.io/en/stable/how-it-works.html) and the controller adds them up in
``pytest_runtest_logreport``. Without xdist the same hooks run in the one process.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from typing import Any

import pytest

#: the user property a chaos test's report carries its numbers under
PROPERTY = "chaos_outcome"


@dataclass(frozen=True)
class ChaosOutcome:
    name: str
    submitted: int
    terminal: int
    lost: int
    duplicate_charges: int
    duplicate_webhook_events: int


#: outcomes recorded by the test running in this process, not yet attached to its report
_PENDING: list[ChaosOutcome] = []
#: outcomes read from the reports (on the controller under xdist)
_TALLY: list[ChaosOutcome] = []
_LOCK = threading.Lock()


def record_outcome(
    name: str, *, submitted: int, terminal: int, lost: int, duplicate_charges: int, duplicate_webhook_events: int
) -> ChaosOutcome:
    """Adds one test's numbers to the suite's summary and prints its own line (before the test asserts)."""
    outcome = ChaosOutcome(name, submitted, terminal, lost, duplicate_charges, duplicate_webhook_events)
    with _LOCK:
        _PENDING.append(outcome)
    print(
        f"chaos {name}: submitted={submitted} terminal={terminal} lost={lost} "
        f"duplicate_charges={duplicate_charges} duplicate_webhook_events={duplicate_webhook_events}"
    )
    return outcome


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        with _LOCK:
            pending = list(_PENDING)
            _PENDING.clear()
        report.user_properties.extend((PROPERTY, json.dumps(asdict(outcome))) for outcome in pending)
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    outcomes = [ChaosOutcome(**json.loads(str(value))) for name, value in report.user_properties if name == PROPERTY]
    with _LOCK:
        _TALLY.extend(outcomes)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    with _LOCK:
        outcomes = list(_TALLY)
    if not outcomes:
        return
    terminalreporter.section("chaos suite")
    for outcome in outcomes:
        terminalreporter.write_line(
            f"{outcome.name}: submitted={outcome.submitted} terminal={outcome.terminal} lost={outcome.lost} "
            f"duplicate charges={outcome.duplicate_charges} "
            f"duplicate webhook events={outcome.duplicate_webhook_events}"
        )
    terminalreporter.write_line(
        f"chaos suite: jobs submitted={sum(o.submitted for o in outcomes)} "
        f"terminal={sum(o.terminal for o in outcomes)} lost={sum(o.lost for o in outcomes)} "
        f"duplicate charges={sum(o.duplicate_charges for o in outcomes)} "
        f"duplicate webhook events={sum(o.duplicate_webhook_events for o in outcomes)}"
    )
