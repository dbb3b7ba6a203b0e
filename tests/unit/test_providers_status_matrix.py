"""Status first, body second: every adapter × every class of broken answer × {submit, poll}, over HTTP to the
emulator (its ``[answer=NAME]`` / ``[poll-answer=NAME]`` markers, ``emulator/broken_answers.py``).

A body that is not the upstream's JSON is classified by its status alone; a 200 we cannot read is a bad
response on submit (the answer was the result) and transient on poll (the task exists upstream: keep polling).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from emulator.app import create_app
from emulator.broken_answers import BROKEN_ANSWERS, TEXT_429_RETRY_AFTER_S
from shared.errors import (
    ProviderError,
    RateLimitedError,
    TransientProviderError,
    UnexpectedResponseError,
)
from tests.unit.contracts import CONTRACTS, Contract
from worker.providers import Accepted
from worker.providers.base import as_pollable

#: broken answer → the exact class it must raise on (submit, poll)
MATRIX: dict[str, tuple[type[ProviderError], type[ProviderError]]] = {
    "html-502": (TransientProviderError, TransientProviderError),
    "html-503": (TransientProviderError, TransientProviderError),
    "text-429": (RateLimitedError, RateLimitedError),
    "empty-200": (UnexpectedResponseError, TransientProviderError),
    "truncated-json": (UnexpectedResponseError, TransientProviderError),
    "commented-json": (UnexpectedResponseError, TransientProviderError),
    "wrong-shape": (UnexpectedResponseError, TransientProviderError),
}
#: what the message must quote of each answer (the status and what the page says)
QUOTED = {"html-502": "502 Bad Gateway", "html-503": "503 Service Temporarily Unavailable", "text-429": "Too Many"}
POLLED = [name for name, contract in CONTRACTS.items() if contract.polled]


def test_the_matrix_covers_every_broken_answer_and_both_polled_adapters() -> None:
    assert set(MATRIX) == set(BROKEN_ANSWERS)
    assert set(POLLED) == {"kling", "bfl"}


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    for name in ("EMULATOR_KLING_ACCESS_KEY", "EMULATOR_KLING_SECRET_KEY", "EMULATOR_OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with TestClient(create_app(), base_url="http://emulator") as client:
        yield client


def _assert_classified(error: ProviderError, expected: type[ProviderError], answer: str, contract: Contract) -> None:
    assert type(error) is expected, f"{contract.provider} {answer}: {type(error).__name__}: {error.message}"
    assert error.provider == contract.provider
    if isinstance(error, RateLimitedError):
        assert error.retry_after_s == TEXT_429_RETRY_AFTER_S  # Retry-After honoured on a text body
    if answer in QUOTED:
        assert QUOTED[answer] in error.message, error.message


@pytest.mark.parametrize("answer", list(MATRIX))
@pytest.mark.parametrize("provider", list(CONTRACTS))
def test_a_broken_submit_answer_is_classified_by_its_status(emulator: TestClient, provider: str, answer: str) -> None:
    contract = CONTRACTS[provider]
    adapter = contract.build(emulator, True)

    with pytest.raises(ProviderError) as caught:
        adapter.submit(contract.spec(f"a fox [answer={answer}]"))

    _assert_classified(caught.value, MATRIX[answer][0], answer, contract)
    # 502/503 come from a gateway that did not act on the request: the retry may go to another channel
    assert not caught.value.may_have_reached_upstream


@pytest.mark.parametrize("answer", list(MATRIX))
@pytest.mark.parametrize("provider", POLLED)
def test_a_broken_poll_answer_never_fails_the_task(emulator: TestClient, provider: str, answer: str) -> None:
    contract = CONTRACTS[provider]
    adapter = contract.build(emulator, True)
    submission = adapter.submit(contract.spec(f"a fox [poll-answer={answer}] [latency=0]"))
    assert isinstance(submission, Accepted)

    for _ in range(3):  # the same answer each time: still only "ask again"
        with pytest.raises(ProviderError) as caught:
            as_pollable(adapter).poll(submission.upstream_id)
        _assert_classified(caught.value, MATRIX[answer][1], answer, contract)
        assert isinstance(caught.value, TransientProviderError)
