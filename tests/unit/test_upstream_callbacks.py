"""Upstream callbacks as a fast path: our callback URL and its token, the adapters that pass it on, the sparse
safety poll, and what a callback does to a job (``react_to_callback`` and the route), against the pipeline driven
directly: fake upstreams, a real database, no sockets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from producer.http import callbacks_routes
from producer.http.callbacks_routes import Action, react_to_callback, reports_pending
from producer.http.errors import ApiError, install_error_handlers
from shared.catalog import PollingPolicy
from shared.config import BflSettings, KlingSettings, Settings
from shared.jobs import JobStatus
from shared.upstream_callbacks import callback_token, callback_url, callbacks_enabled, token_is_valid
from tests.conftest import make_settings
from tests.fakes import RecordingSender, accepted, completed, pending, succeeded
from tests.unit.conftest import OPENAI_REQUEST, Harness, HarnessFactory
from worker.pipeline import poll_job, submit_job
from worker.providers import JobSpec, PollResult
from worker.providers.bfl import BflProvider
from worker.providers.kling import KlingProvider
from worker.scheduling import safety_poll
from worker.scheduling.polling import next_poll_delay

ON: dict[str, Any] = {"enabled": True, "base_url": "https://gw.example.com/", "safety_interval_s": 60}
JOB = "0123456789abcdef0123456789abcdef"
KLING_SUCCEED = {"task_id": "up-1", "task_status": "succeed", "task_result": {"images": [{"index": 0, "url": "x"}]}}


@pytest.fixture
def harness(make_harness: HarnessFactory, sqlite_url: str) -> Harness:
    """A harness whose settings give Kling and BFL our callback URL."""
    return make_harness(sqlite_url, callbacks=ON)


def start_running(harness: Harness) -> str:
    """A Kling job whose submit was accepted (running, poll_count 0, its safety poll queued)."""
    job_id = harness.enqueue()
    harness.kling.submissions.append(accepted("up-1"))
    submit_job(job_id, rt=harness.rt)
    assert harness.job(job_id).status == JobStatus.RUNNING
    return job_id


def callback(harness: Harness, job_id: str, provider: str = "kling") -> Action:
    return react_to_callback(
        job_id, provider=provider, session=harness.rt.session, sender=harness.sender, now=harness.clock.now
    )


# -- the URL and its token ---------------------------------------------------------------------------------


def test_callbacks_are_off_by_default() -> None:
    settings = make_settings()
    assert not callbacks_enabled(settings, "kling")
    assert callback_url(settings, "kling", JOB) is None


def test_the_url_names_provider_and_job_and_its_token_opens_only_that_job() -> None:
    settings = make_settings(callbacks=ON)

    url = callback_url(settings, "kling", JOB)

    token = callback_token(settings, "kling", JOB)
    assert url == f"https://gw.example.com/internal/callbacks/kling/{JOB}?token={token}"
    assert len(token) == 43 and token.isascii() and "=" not in token
    assert token_is_valid(settings, "kling", JOB, token)
    assert not token_is_valid(settings, "kling", JOB[:-1] + "0", token)
    assert not token_is_valid(settings, "bfl", JOB, token)
    assert not token_is_valid(settings, "openai", JOB, callback_token(settings, "openai", JOB))
    assert not token_is_valid(settings, "kling", JOB, "")
    other_key = make_settings(callbacks=ON, signing_key="another-signing-key-0123456789")
    assert not token_is_valid(other_key, "kling", JOB, token)


def test_the_base_url_defaults_to_the_public_one_and_only_listed_callback_providers_get_it() -> None:
    settings = make_settings(
        public_base_url="http://127.0.0.1:8000/", callbacks={"enabled": True, "providers": ["kling"]}
    )

    assert str(callback_url(settings, "kling", JOB)).startswith(
        f"http://127.0.0.1:8000/internal/callbacks/kling/{JOB}?"
    )
    assert callback_url(settings, "bfl", JOB) is None
    assert callback_url(settings, "openai", JOB) is None


def test_a_job_without_callbacks_is_submitted_without_a_url(make_harness: HarnessFactory, sqlite_url: str) -> None:
    harness = make_harness(sqlite_url)

    start_running(harness)

    assert harness.kling.submitted[0].callback_url is None
    [(_, _, countdown)] = harness.sender.polls
    assert countdown < 10  # the catalog's first poll


# -- the adapters pass it on -------------------------------------------------------------------------------


def _spec(callback: str | None, **params: Any) -> JobSpec:
    return JobSpec(
        job_id=JOB,
        upstream_model="flux-2-pro",
        operation="text2img",
        params=params,
        image_count=1,
        callback_url=callback,
    )


def _recording(answer: dict[str, Any]) -> tuple[list[dict[str, Any]], httpx.MockTransport]:
    bodies: list[dict[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=answer)

    return bodies, httpx.MockTransport(handle)


@pytest.mark.parametrize("url", ["https://gw.example.com/internal/callbacks/kling/x?token=t", None])
def test_kling_gets_our_url_as_callback_url(url: str | None) -> None:
    bodies, transport = _recording(
        {"code": 0, "message": "SUCCEED", "data": {"task_id": "t1", "task_status": "submitted"}}
    )
    base = "https://kling.example.com"
    settings = KlingSettings(base_url=base, access_key="ak", secret_key="kling-secret-key-0123456789abcdef0123")
    adapter = KlingProvider(settings, http=httpx.Client(base_url=base, transport=transport))
    spec = JobSpec(JOB, "kling-v2-1", "text2img", params={"prompt": "p"}, image_count=1, callback_url=url)

    adapter.submit(spec)

    assert bodies[0].get("callback_url") == url
    assert bodies[0]["external_task_id"] == JOB


@pytest.mark.parametrize("url", ["https://gw.example.com/internal/callbacks/bfl/x?token=t", None])
def test_bfl_gets_our_url_as_webhook_url(url: str | None) -> None:
    bodies, transport = _recording({"id": "t1", "polling_url": "https://api.bfl.ai/v1/get_result?id=t1"})
    base = "https://api.bfl.ai"
    adapter = BflProvider(
        BflSettings(base_url=base, api_key="k"), http=httpx.Client(base_url=base, transport=transport)
    )

    adapter.submit(_spec(url, prompt="p"))

    assert bodies[0].get("webhook_url") == url
    assert "webhook_secret" not in bodies[0]


# -- the sparse safety poll --------------------------------------------------------------------------------


def test_a_job_expecting_a_callback_gets_our_url_and_a_sparse_safety_poll(harness: Harness) -> None:
    job_id = start_running(harness)

    spec = harness.kling.submitted[0]
    assert spec.callback_url == callback_url(harness.rt.settings, "kling", job_id)
    [(polled_job, count, countdown)] = harness.sender.polls
    assert (polled_job, count) == (job_id, 0)
    assert 30 * 0.9 <= countdown <= 30 * 1.1  # safety_first_poll_s (the catalog says 4 s), ± jitter

    harness.kling.polls.append(pending())
    poll_job(job_id, 0, rt=harness.rt)
    assert 60 * 0.9 <= harness.sender.polls[-1][2] <= 60 * 1.1  # then every safety_interval_s


def test_the_safety_poll_ignores_a_usual_window_and_waits_the_same_interval_throughout() -> None:
    settings = make_settings(callbacks={"enabled": True, "safety_first_poll_s": 20, "safety_interval_s": 45})
    learned = PollingPolicy(first_poll_s=2.0, usual_window_s=30.0, interval_s=2.0, base_s=1.0, max_s=8.0, jitter=0)

    sparse = safety_poll.policy_for(learned, provider="bfl", settings=settings)

    assert [next_poll_delay(polls, sparse) for polls in range(6)] == [20, 45, 45, 45, 45, 45]
    assert sparse.deadline_s == learned.deadline_s
    assert safety_poll.policy_for(learned, provider="openai", settings=settings) is learned


def test_a_sync_provider_gets_no_url(harness: Harness) -> None:
    harness.openai.submissions.append(completed())
    submit_job(harness.enqueue(OPENAI_REQUEST), rt=harness.rt)

    assert harness.openai.submitted[0].callback_url is None


# -- what a callback does ----------------------------------------------------------------------------------


def test_a_callback_moves_the_chain_on_and_polls_at_once(harness: Harness) -> None:
    job_id = start_running(harness)
    harness.advance(5)

    assert callback(harness, job_id) == Action.POLL_SENT

    job = harness.job(job_id)
    assert (job.poll_count, job.next_poll_at) == (1, harness.clock.now)
    assert harness.sender.polls[-1] == (job_id, 1, 0)
    # the safety link still queued (poll 0) is now a no-op; the callback's link reads the upstream and finishes
    poll_job(job_id, 0, rt=harness.rt)
    assert harness.kling.polled == []
    harness.kling.polls.append(succeeded())
    poll_job(job_id, 1, rt=harness.rt)
    assert harness.kling.polled == ["up-1"]
    assert harness.job(job_id).status == JobStatus.SUCCEEDED
    assert len(harness.costs(job_id)) == 1


def test_a_replay_after_the_end_changes_nothing(harness: Harness) -> None:
    job_id = start_running(harness)
    callback(harness, job_id)
    harness.kling.polls.append(succeeded())
    poll_job(job_id, 1, rt=harness.rt)
    sent = list(harness.sender.polls)

    assert callback(harness, job_id) == Action.ALREADY_FINISHED
    assert harness.sender.polls == sent
    assert len(harness.costs(job_id)) == 1


def test_a_duplicate_before_the_poll_ran_costs_no_extra_upstream_read(harness: Harness) -> None:
    job_id = start_running(harness)

    assert callback(harness, job_id) == Action.POLL_SENT
    assert callback(harness, job_id) == Action.POLL_SENT

    assert [count for _, count, _ in harness.sender.polls] == [0, 1, 2]
    harness.kling.polls.append(succeeded())
    for link in (0, 1, 2):  # the queued links in any order: only the newest reads the upstream
        poll_job(job_id, link, rt=harness.rt)
    assert harness.kling.polled == ["up-1"]
    assert harness.job(job_id).status == JobStatus.SUCCEEDED
    assert len(harness.costs(job_id)) == 1
    assert len(harness.deliveries(job_id)) <= 1


def test_a_callback_during_a_poll_in_flight_is_not_lost(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a safety poll that reads "pending" just before the upstream finishes and calls back
    job_id = start_running(harness)
    actions: list[Action] = []

    def poll_that_crosses_the_callback(upstream_id: str) -> PollResult:
        harness.kling.polled.append(upstream_id)
        actions.append(callback(harness, job_id))
        return pending()

    monkeypatch.setattr(harness.kling, "poll", poll_that_crosses_the_callback)
    poll_job(job_id, 0, rt=harness.rt)

    # Then the in-flight poll schedules nothing (its link is stale) and the callback's poll is due now
    assert actions == [Action.POLL_SENT]
    assert harness.sender.polls[1:] == [(job_id, 1, 0)]
    assert harness.job(job_id).poll_count == 1


def test_a_callback_before_the_submit_is_recorded_polls_link_0_a_little_later(harness: Harness) -> None:
    job_id = harness.enqueue()

    assert callback(harness, job_id) == Action.EARLY_POLL_SENT

    assert harness.sender.polls == [(job_id, 0, callbacks_routes.EARLY_POLL_S)]
    assert harness.job(job_id).status == JobStatus.QUEUED


def test_a_callback_for_no_such_job_or_another_provider_is_not_found(harness: Harness) -> None:
    job_id = start_running(harness)

    for job, provider in ((JOB, "kling"), (job_id, "bfl")):
        with pytest.raises(ApiError) as raised:
            callback(harness, job, provider)
        assert raised.value.status == 404


def test_a_chain_that_keeps_moving_is_left_to_its_own_polls(harness: Harness) -> None:
    job_id = start_running(harness)
    link = 0

    def moving_chain() -> AbstractContextManager[Session]:
        """Another poll advances the chain before every read and compare-and-set."""
        nonlocal link
        harness.kling.polls.append(pending())
        poll_job(job_id, link, rt=harness.rt)
        link += 1
        return harness.rt.session()

    sender = RecordingSender()
    action = react_to_callback(job_id, provider="kling", session=moving_chain, sender=sender, now=harness.clock.now)

    assert action == Action.CHAIN_BUSY
    assert sender.polls == []


@pytest.mark.parametrize(
    ("body", "pending_"),
    [
        ({"task_id": "t", "task_status": "submitted"}, True),
        ({"task_id": "t", "task_status": "processing"}, True),
        (KLING_SUCCEED, False),
        ({"task_id": "t", "task_status": "failed", "task_status_msg": "x"}, False),
        ({"id": "t", "status": "processing", "outputs": []}, True),  # Kling's new-design payload
        ({"id": "t", "status": "succeeded"}, False),
        ({"id": "t", "status": "Pending"}, True),  # BFL
        ({"id": "t", "status": "Ready"}, False),
        ({"id": "t"}, False),
        ([1, 2], False),
        ("not json", False),
    ],
)
def test_only_a_status_still_under_way_is_skipped(body: Any, pending_: bool) -> None:
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    assert reports_pending(raw) is pending_


# -- the route ---------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What the route uses of ``ApiContext``."""

    settings: Settings
    session: Callable[[], AbstractContextManager[Session]]
    sender: RecordingSender


@pytest.fixture
def api(harness: Harness) -> Iterator[TestClient]:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(callbacks_routes.router)
    app.state.context = Context(settings=harness.rt.settings, session=harness.rt.session, sender=harness.sender)
    with TestClient(app) as client:
        yield client


def url_of(harness: Harness, job_id: str, provider: str = "kling") -> str:
    url = callback_url(harness.rt.settings, provider, job_id) or ""
    return url.removeprefix("https://gw.example.com")


def test_the_route_answers_a_terminal_callback_with_a_poll(api: TestClient, harness: Harness) -> None:
    job_id = start_running(harness)

    response = api.post(url_of(harness, job_id), json=KLING_SUCCEED)

    assert response.status_code == 200
    assert response.json() == {"received": True, "action": "poll_sent"}
    assert harness.sender.polls[-1] == (job_id, 1, 0)


def test_the_route_skips_a_status_still_under_way(api: TestClient, harness: Harness) -> None:
    job_id = start_running(harness)

    response = api.post(url_of(harness, job_id), json={"task_id": "up-1", "task_status": "processing"})

    assert response.json()["action"] == "ignored_pending"
    assert len(harness.sender.polls) == 1 and harness.job(job_id).poll_count == 0


def test_the_route_refuses_a_wrong_or_missing_token(api: TestClient, harness: Harness) -> None:
    job_id = start_running(harness)
    other = url_of(harness, JOB).partition("?")[2]

    for path in (f"/internal/callbacks/kling/{job_id}", f"/internal/callbacks/kling/{job_id}?{other}"):
        response = api.post(path, json=KLING_SUCCEED)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_callback_token"
    assert len(harness.sender.polls) == 1


def test_the_route_knows_only_callback_providers_and_our_jobs(api: TestClient, harness: Harness) -> None:
    start_running(harness)

    assert api.post(f"/internal/callbacks/openai/{JOB}?token=x", json={}).status_code == 404
    assert api.post(url_of(harness, JOB), json=KLING_SUCCEED).status_code == 404  # a valid token, no such job


def test_the_route_answers_a_replay_with_200(api: TestClient, harness: Harness) -> None:
    job_id = start_running(harness)
    harness.kling.polls.append(succeeded())
    poll_job(job_id, 0, rt=harness.rt)

    response = api.post(url_of(harness, job_id), content=b"\x00 not json")

    assert (response.status_code, response.json()["action"]) == (200, "already_finished")


def test_a_late_callback_does_not_change_a_schedule_made_by_the_deadline(harness: Harness) -> None:
    job_id = start_running(harness)
    harness.advance(timedelta(days=1).total_seconds())  # past the deadline

    assert callback(harness, job_id) == Action.POLL_SENT
    poll_job(job_id, 1, rt=harness.rt)

    assert harness.job(job_id).status == JobStatus.TIMED_OUT
    assert harness.kling.polled == []
