"""Schemathesis against our own OpenAPI schema, in-process (ASGI) over the real private Redis and a SQLite file.

For every documented operation, with a valid key: no answer is a 5xx, and a request that is not accepted
(any non-2xx) leaves no job row behind. Bounded for CI: 25 examples per operation, derandomized (the same
examples every run), no example database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings

from producer.http.app import create_app
from shared.db.tables import Job
from tests.conftest import make_settings
from tests.integration.harness import Rows
from tests.support import API_KEY

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def job_rows(sqlite_url: str) -> Iterator[Rows]:
    rows = Rows(sqlite_url)
    yield rows
    rows.close()


@pytest.fixture
def app(isolated_redis_url: str, sqlite_url: str, tmp_path: Path) -> FastAPI:
    # no sync waits: an accepted generation answers 202 at once (no worker runs here)
    app_settings = make_settings(
        redis_url=isolated_redis_url, database_url=sqlite_url, files_dir=tmp_path / "files", sync_timeout_s=0
    )
    return create_app(app_settings)


# The operations come from an app built at import (its schema does not depend on settings); every case is
# sent to the test's own app (``case.call(app=…)``), whose lifespan schemathesis runs and ends with the test.
# (``schemathesis.pytest.from_fixture`` would be the natural loader, but it fails on pytest 9: ``_nodeid``.)
# That app never serves a case: it points at no Redis (port 9) and an in-memory database.
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(make_settings(redis_url="redis://127.0.0.1:9/0")))


@schema.parametrize()
@settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_no_operation_answers_5xx_or_writes_a_job_it_refused(case: Any, app: FastAPI, job_rows: Rows) -> None:
    before = job_rows.count(Job)

    response = case.call(headers=AUTH, app=app)

    assert hasattr(app.state, "context"), "the case was not served by this test's app"

    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    if not 200 <= response.status_code < 300:
        assert job_rows.count(Job) == before, f"{case.method} {case.formatted_path} answered {response.status_code}"
