"""The poll chain's claims (``shared.poll_chains``), the same for the Redis chains and the in-memory ones."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from redis import Redis

from shared.poll_chains import InMemoryPollChains, PollChains, RedisPollChains, needs_heartbeat, next_link


@pytest.fixture(params=["redis", "memory"])
def chains(request: pytest.FixtureRequest, redis_url: str) -> Iterator[PollChains]:
    if request.param == "memory":
        yield InMemoryPollChains()
        return
    client = Redis.from_url(redis_url)
    client.flushdb()
    yield RedisPollChains(client)
    client.close()


def test_only_the_link_the_chain_waits_for_may_poll(chains: PollChains) -> None:
    chains.start("j")
    assert chains.current("j") == 0
    assert not chains.claim("j", 1, at=1.0)  # from the future
    first = chains.claim("j", 0, at=10.0)
    assert first is not None and first.won and first.previous_at is None
    assert not chains.claim("j", 0, at=11.0)  # the same link delivered twice
    second = chains.claim("j", 1, at=14.0)
    assert second is not None and second.won and second.previous_at == pytest.approx(10.0)
    assert chains.current("j") == 2


def test_a_claim_that_polls_nothing_keeps_the_last_polls_time(chains: PollChains) -> None:
    chains.start("j")
    chains.claim("j", 0, at=10.0)
    hurried = chains.claim("j", 1)  # an upstream callback moves the chain without polling
    assert hurried is not None and hurried.won
    after = chains.claim("j", 2, at=12.0)
    assert after is not None and after.previous_at == pytest.approx(10.0)


def test_a_chain_nobody_knows_is_claimed_by_the_first_link_that_comes(chains: PollChains) -> None:
    assert chains.current("forgotten") is None
    assert next_link(chains, "forgotten", floor=3) == 3
    claim = chains.claim("forgotten", 3, at=1.0)
    assert claim is not None and claim.won
    assert next_link(chains, "forgotten", floor=0) == 4


def test_an_unreachable_redis_lets_no_link_poll() -> None:
    chains = RedisPollChains(Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))
    assert chains.claim("j", 0, at=1.0) is None
    assert chains.current("j") is None


@pytest.mark.parametrize(
    ("due_in_s", "needed"),
    [(5.0, False), (30.0, False), (30.5, True)],
)
def test_the_row_hears_of_a_link_only_when_its_promise_would_go_stale(due_in_s: float, needed: bool) -> None:
    promised = datetime(2026, 12, 1, tzinfo=UTC)
    due = promised + timedelta(seconds=due_in_s)
    assert needs_heartbeat(promised=promised, next_due=due, overdue_s=60.0) is needed
    assert needs_heartbeat(promised=None, next_due=due, overdue_s=60.0)
