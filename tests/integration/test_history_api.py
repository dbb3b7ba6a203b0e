"""The history API the console reads, against the real API process (SQLite and PostgreSQL): the job list with its
filters and cursor (``GET /v1/images/generations`` without ``task_id``), each tenant seeing only its own jobs, a
bad filter answered 400 naming it, the timeline, and the cost report's bounds. No worker: the jobs stay queued."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.harness import ProcessesFactory
from tests.support import API_KEY, OTHER_API_KEY

pytestmark = pytest.mark.integration

GENERATIONS = "/v1/images/generations"


def client(api_url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def submit(api: httpx.Client, **body: Any) -> str:
    response = api.post(GENERATIONS, json={"async": True, **body})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_the_job_list_filters_pages_and_keeps_tenants_apart(processes: ProcessesFactory, database_url: str) -> None:
    api_url = processes(database_url).api()
    with client(api_url, API_KEY) as api, client(api_url, OTHER_API_KEY) as other:
        kling = submit(api, model="kling-image", model_name="kling-v2-1", prompt="a red 100% lighthouse")
        openai = [submit(api, model="gpt-image-1", prompt=f"a blue boat {i}") for i in range(3)]
        theirs = submit(other, model="gpt-image-1", prompt="a red lighthouse, someone else's")

        everything = api.get(GENERATIONS).json()
        assert [job["id"] for job in everything["data"]] == [*reversed(openai), kling]  # newest first
        assert everything["has_more"] is False and everything["next_cursor"] is None
        assert everything["data"][-1]["prompt"] == "a red 100% lighthouse"

        first = api.get(GENERATIONS, params={"limit": 2}).json()
        assert first["has_more"] is True
        second = api.get(GENERATIONS, params={"limit": 2, "cursor": first["next_cursor"]}).json()
        assert [job["id"] for job in first["data"] + second["data"]] == [*reversed(openai), kling]
        assert second["has_more"] is False

        def ids(**params: Any) -> list[str]:
            response = api.get(GENERATIONS, params=params)
            assert response.status_code == 200, response.text
            return [job["id"] for job in response.json()["data"]]

        assert ids(model="kling-image") == [kling]
        assert ids(q="LIGHTHOUSE") == [kling]
        assert ids(q="100%") == [kling]  # a LIKE wildcard is matched literally
        assert ids(q="0%") == [kling]
        assert ids(q="_") == []
        assert ids(status="queued", model="gpt-image-1") == list(reversed(openai))
        assert ids(status="succeeded") == []
        created = everything["data"][1]["created_at"]
        assert set(ids(created_after="2000-01-01T00:00:00Z")) == {kling, *openai}
        assert ids(created_before="2000-01-01T00:00:00Z") == []
        assert created > 0

        assert [job["id"] for job in other.get(GENERATIONS).json()["data"]] == [theirs]
        assert api.get(GENERATIONS, params={"task_id": theirs}).status_code == 404
        assert api.get(GENERATIONS, params={"task_id": kling}).json()["id"] == kling  # the old query still works
        foreign_cursor = other.get(GENERATIONS, params={"cursor": kling})
        assert foreign_cursor.status_code == 400 and foreign_cursor.json()["error"]["param"] == "cursor"

        bad_filters: list[tuple[dict[str, Any], str]] = [
            ({"status": "bogus"}, "status"),
            ({"limit": 0}, "limit"),
            ({"limit": 101}, "limit"),
            ({"created_after": "yesterday"}, "created_after"),
            ({"created_after": "2026-01-01T00:00:00"}, "created_after"),
            ({"cursor": "nope"}, "cursor"),
        ]
        for params, param in bad_filters:
            response = api.get(GENERATIONS, params=params)
            assert response.status_code == 400, (params, response.text)
            assert response.json()["error"]["param"] == param, (params, response.text)

        timeline = api.get(f"{GENERATIONS}/{kling}/timeline").json()
        assert timeline["request"]["provider"] == "kling"
        assert timeline["request"]["params"]["prompt"] == "a red 100% lighthouse"
        assert timeline["data"][0]["to_status"] == "queued"
        assert other.get(f"{GENERATIONS}/{kling}/timeline").status_code == 404

        report = api.get("/v1/costs").json()
        assert report["data"] == [] and report["totals"] == []  # nothing has run, nothing is billed
        bad_periods: list[tuple[dict[str, Any], str]] = [
            ({"since": "2026-01-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"}, "since"),
            ({"since": "2020-01-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"}, "since"),
            ({"until": "2025-01-01T00:00:00"}, "until"),
        ]
        for params, param in bad_periods:
            response = api.get("/v1/costs", params=params)
            assert response.status_code == 400, (params, response.text)
            assert response.json()["error"]["param"] == param

        page = httpx.get(f"{api_url}/ui", timeout=10)
        assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
        assert httpx.get(f"{api_url}/ui/static/app.js", timeout=10).status_code == 200
        assert httpx.get(f"{api_url}/ui/static/..%2Froutes.py", timeout=10).status_code == 404
