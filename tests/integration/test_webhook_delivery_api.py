"""The webhook delivery contract end to end: a receiver that is down for a while gets the event afterwards
with one ``webhook-id``; the delivery log shows every attempt; a replay sends it again; tenants read their
secret and cannot see each other's logs."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.integration.harness import Emulator, ProcessesFactory, Rows, WebhookReceiver, wait_for_delivered
from tests.support import API_KEY, OTHER_API_KEY, tenant_webhook_secret, wait_until

pytestmark = pytest.mark.integration

KLING = {"model": "kling-image", "model_name": "kling-v2-1", "prompt": "a lighthouse", "aspect_ratio": "1:1"}


def _auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_receiver_down_for_a_while_gets_the_event_with_one_webhook_id(
    processes: ProcessesFactory,
    sqlite_url: str,
    emulator: Emulator,
    webhook_receiver: Any,
    rows_for: Any,
) -> None:
    # Given a receiver that answers 503 to the first three attempts (schedule shortened for the test)
    emulator.set_latency(kling_s=0.5, openai_s=0.1)
    receiver: WebhookReceiver = webhook_receiver(statuses=[503, 503, 503])
    stack = processes(sqlite_url, IMAGEJOBS_WEBHOOKS__RETRY_DELAYS_S="[0.5, 0.5, 0.5, 0.5]")
    stack.worker()
    stack.beat()
    api = stack.api()
    rows: Rows = rows_for(sqlite_url)

    # When a job with a callback finishes
    created = httpx.post(f"{api}/v1/images/generations", json={**KLING, "callback_url": receiver.url}, headers=_auth())
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    wait_for_delivered(rows, job_id, timeout_s=60)

    # Then every attempt carried one webhook-id, the last was delivered and verifies with the tenant's secret
    received = receiver.received()
    assert len(received) == 4
    assert {request.headers["webhook-id"] for request in received} == {f"msg_{job_id}"}
    secret = httpx.get(f"{api}/v1/webhooks/secret", headers=_auth()).json()["secret"]
    assert secret == tenant_webhook_secret()
    event = Webhook(secret).verify(received[-1].body, received[-1].headers)
    assert (event["type"], event["data"]["id"]) == ("job.succeeded", job_id)

    # And the delivery log shows the attempts
    log = httpx.get(f"{api}/v1/images/generations/{job_id}/webhooks", headers=_auth()).json()
    assert [(a["attempt"], a["state"], a["response_status"]) for a in log["data"]] == [
        (1, "failed", 503),
        (2, "failed", 503),
        (3, "failed", 503),
        (4, "delivered", 200),
    ]
    assert log["exhausted"] is False and log["next_attempt_at"] is None
    assert all(a["latency_ms"] is not None for a in log["data"])

    # When the caller asks for a replay, the same event is sent again with the same id
    replay = httpx.post(f"{api}/v1/images/generations/{job_id}/webhooks/redeliver", headers=_auth())
    assert replay.status_code == 202, replay.text
    wait_until(lambda: len(receiver.received()) == 5, timeout_s=30, what="the replayed delivery")
    assert receiver.received()[-1].headers["webhook-id"] == f"msg_{job_id}"

    # And another tenant sees none of it
    for path in (f"/v1/images/generations/{job_id}/webhooks", f"/v1/images/generations/{job_id}/webhooks/redeliver"):
        method = "POST" if path.endswith("redeliver") else "GET"
        answer = httpx.request(method, f"{api}{path}", headers=_auth(OTHER_API_KEY))
        assert answer.status_code == 404, (path, answer.text)
    assert httpx.get(f"{api}/v1/webhooks/secret", headers=_auth(OTHER_API_KEY)).json()["secret"] != secret


def test_exhausted_deliveries_are_visible(
    processes: ProcessesFactory, sqlite_url: str, emulator: Emulator, webhook_receiver: Any, rows_for: Any
) -> None:
    emulator.set_latency(kling_s=0.2, openai_s=0.1)
    receiver: WebhookReceiver = webhook_receiver(default_status=500)
    stack = processes(sqlite_url, IMAGEJOBS_WEBHOOKS__RETRY_DELAYS_S="[0.3]")
    stack.worker()
    api = stack.api()

    created = httpx.post(f"{api}/v1/images/generations", json={**KLING, "callback_url": receiver.url}, headers=_auth())
    job_id = created.json()["id"]

    def exhausted() -> bool:
        log = httpx.get(f"{api}/v1/images/generations/{job_id}/webhooks", headers=_auth()).json()
        return bool(log["exhausted"])

    wait_until(exhausted, timeout_s=60, what="the schedule to run out")
    log = httpx.get(f"{api}/v1/images/generations/{job_id}/webhooks", headers=_auth()).json()
    assert [(a["attempt"], a["state"]) for a in log["data"]] == [(1, "failed"), (2, "failed")]
    assert len(receiver.received()) == 2
