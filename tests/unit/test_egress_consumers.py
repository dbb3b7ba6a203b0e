"""The SSRF matrix applied where caller-supplied URLs are used: at submit (400 naming the parameter), when
the worker fetches an input image, and when it delivers a webhook (a recorded failure)."""

from __future__ import annotations

import httpx
import pytest
from sqlmodel import select

from producer.enqueue import enqueue_job
from shared.db.tables import Job
from shared.egress import EgressPolicy, GuardedTransport
from shared.errors import InvalidRequestError
from shared.jobs import ImageRequest
from tests.fakes import RecordingSender, completed
from tests.unit.conftest import OPENAI_REQUEST, Harness
from tests.unit.test_egress import SSRF_MATRIX
from worker.inputs import HttpImageLoader, InputImageError
from worker.pipeline import submit_job
from worker.webhooks import deliver_webhook

KLING_IMG2IMG = {"model": "kling-image", "model_name": "kling-v2-1", "prompt": "a fox"}


def _no_network(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"the guard let {request.url} through")


@pytest.mark.parametrize("url", SSRF_MATRIX)
@pytest.mark.parametrize(
    ("param", "fields"),
    [
        pytest.param("callback_url", lambda url: {"callback_url": url}, id="callback"),
        pytest.param("image", lambda url: {"image": url}, id="image"),
        pytest.param("image_url", lambda url: {"image_url": url}, id="image_url"),
    ],
)
def test_submit_refuses_local_destinations_naming_the_parameter(harness: Harness, url: str, param: str, fields) -> None:
    sender = RecordingSender()
    request = ImageRequest.model_validate({**KLING_IMG2IMG, **fields(url)})

    with harness.session() as session, pytest.raises(InvalidRequestError) as refused:
        enqueue_job(request, session=session, owner="owner-1", sender=sender, egress=EgressPolicy())

    assert refused.value.param == param
    assert sender.submits == []
    with harness.session() as session:
        assert session.exec(select(Job)).all() == []


#: the loader fetches only http(s) references (anything else is read as base64 and refused as such)
HTTP_MATRIX = [param for param in SSRF_MATRIX if str(param.values[0]).startswith("http")]


@pytest.mark.parametrize("url", HTTP_MATRIX)
def test_input_image_fetch_refuses_the_matrix(url: str) -> None:
    guarded = httpx.Client(transport=GuardedTransport(EgressPolicy(), inner=httpx.MockTransport(_no_network)))
    loader = HttpImageLoader(guarded, max_bytes=1024)

    with pytest.raises(InputImageError):
        loader.load(url)


def test_webhook_to_a_name_resolving_to_loopback_is_a_recorded_failure(harness: Harness) -> None:
    # Given a callback URL whose name passes the submit-time check but resolves to loopback
    job_id = harness.enqueue(OPENAI_REQUEST, callback_url="https://rebinding.example/hook")
    harness.openai.submissions.append(completed())
    submit_job(job_id, rt=harness.rt)
    [(delivery_id, _)] = harness.sender.webhooks
    policy = EgressPolicy(resolver=lambda host, port: ["127.0.0.1"])
    harness.rt.webhook_http = httpx.Client(transport=GuardedTransport(policy, inner=httpx.MockTransport(_no_network)))

    deliver_webhook(delivery_id, rt=harness.rt)

    first = harness.deliveries(job_id)[0]
    assert first.state == "failed"
    assert first.response_status is None
    assert first.error is not None and first.error.startswith("refused:")
