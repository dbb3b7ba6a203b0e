"""The sync waiter asks the database only when there is something to confirm (pure unit tests: fakeredis)."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest

from producer.http.waiter import JobWaiter
from shared.queue import JOB_DONE_CHANNEL


class Database:
    """What ``is_done`` would read: whether the job has ended, and how often it was asked."""

    def __init__(self) -> None:
        self.ended = False
        self.reads = 0

    async def is_done(self) -> bool:
        self.reads += 1
        return self.ended


async def _started(recheck_s: float = 30.0) -> tuple[JobWaiter, fakeredis.FakeAsyncRedis]:
    server = fakeredis.FakeServer()
    waiter = JobWaiter(fakeredis.FakeAsyncRedis(server=server), recheck_s=recheck_s)
    publisher = fakeredis.FakeAsyncRedis(server=server)
    await waiter.start()
    while (await publisher.pubsub_numsub(JOB_DONE_CHANNEL))[0][1] == 0:  # the listener is subscribed
        await asyncio.sleep(0.01)
    return waiter, publisher


async def _announce(publisher: fakeredis.FakeAsyncRedis, job_id: str) -> None:
    await publisher.publish(JOB_DONE_CHANNEL, job_id)


def test_a_job_announced_before_the_wait_is_confirmed_with_one_read() -> None:
    async def scenario() -> Database:
        waiter, publisher = await _started()
        database = Database()
        database.ended = True
        await _announce(publisher, "job-1")
        while "job-1" not in waiter._announced:  # delivered to the listener
            await asyncio.sleep(0.01)
        assert await waiter.wait("job-1", timeout_s=60, is_done=database.is_done, check_first=False)
        await waiter.stop()
        return database

    assert asyncio.run(scenario()).reads == 1


def test_a_new_job_is_not_read_until_it_is_announced() -> None:
    async def scenario() -> Database:
        waiter, publisher = await _started()
        database = Database()
        waiting = asyncio.create_task(waiter.wait("job-2", timeout_s=60, is_done=database.is_done, check_first=False))
        await asyncio.sleep(0.2)
        assert database.reads == 0  # nothing said the job changed: no read
        database.ended = True
        await _announce(publisher, "job-2")
        assert await asyncio.wait_for(waiting, timeout=10)
        await waiter.stop()
        return database

    assert asyncio.run(scenario()).reads == 1


def test_a_missed_announcement_is_caught_by_the_re_check() -> None:
    async def scenario() -> Database:
        waiter, _publisher = await _started(recheck_s=0.05)
        database = Database()
        database.ended = True  # ended, but its announcement never came
        assert await waiter.wait("job-3", timeout_s=60, is_done=database.is_done, check_first=False)
        await waiter.stop()
        return database

    assert asyncio.run(scenario()).reads == 1


@pytest.mark.parametrize("check_first", [True, False])
def test_a_job_that_never_ends_times_out(check_first: bool) -> None:
    async def scenario() -> tuple[bool, Database]:
        waiter, _publisher = await _started(recheck_s=0.05)
        database = Database()
        ended = await waiter.wait("job-4", timeout_s=0.3, is_done=database.is_done, check_first=check_first)
        await waiter.stop()
        return ended, database

    ended, database = asyncio.run(scenario())
    assert not ended
    assert database.reads >= 2


def test_check_first_reads_at_once() -> None:
    async def scenario() -> Database:
        waiter, _publisher = await _started()
        database = Database()
        database.ended = True  # e.g. a repeated request for a job that ended long ago
        assert await asyncio.wait_for(
            waiter.wait("job-5", timeout_s=60, is_done=database.is_done, check_first=True), timeout=5
        )
        await waiter.stop()
        return database

    assert asyncio.run(scenario()).reads == 1


def test_a_new_subscription_makes_every_waiter_look_once() -> None:
    async def scenario() -> Database:
        waiter, _publisher = await _started()
        database = Database()
        waiting = asyncio.create_task(waiter.wait("job-6", timeout_s=60, is_done=database.is_done, check_first=False))
        await asyncio.sleep(0.1)
        database.ended = True  # ended while the subscription was down: its announcement is lost
        waiter._wake_everyone()  # what the listener does when its subscription is (re)confirmed
        assert await asyncio.wait_for(waiting, timeout=10)
        await waiter.stop()
        return database

    assert asyncio.run(scenario()).reads == 1
