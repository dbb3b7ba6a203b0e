"""A job's poll schedule as its upstream model's recent completions teach it, and the lesson each job adds.

The catalog's polling policy, with the first poll and usual window its upstream model's recent completions teach
(``latency``); sparse when its upstream calls back (``safety_poll``).
"""

from __future__ import annotations

from datetime import datetime

from shared.catalog import PollingPolicy
from shared.db import jobs_repo
from shared.db.tables import Job
from shared.jobs import JobStatus
from worker.runtime import Runtime
from worker.scheduling import safety_poll
from worker.scheduling.latency import Completion, latency_key
from worker.scheduling.polling import with_profile


def learned_policy(job: Job, *, rt: Runtime) -> PollingPolicy:
    catalogs = PollingPolicy.model_validate(job.polling_policy)
    learned = with_profile(catalogs, rt.latency.profile(_latency_key(job)))
    return safety_poll.policy_for(learned, provider=job.provider, settings=rt.settings)


def record_completion(job: Job, *, seen_at: datetime, rt: Runtime) -> None:
    """Teach the poll schedule when this upstream model's tasks finish: after the last poll that saw the task
    pending (the row's last update) and by the poll that saw it done, in seconds since the job started running
    (the row's ``running_since``: no read of its history)."""
    started = job.running_since
    if started is None:  # a job that started running before the column existed
        with rt.session() as session:
            events = jobs_repo.list_events(session=session, job_id=job.id)
        started = max((event.at for event in events if event.to_status == JobStatus.RUNNING), default=None)
    if started is None:
        return
    last_pending = job.updated_at if job.poll_count > 0 else started
    after_s, by_s = (last_pending - started).total_seconds(), (seen_at - started).total_seconds()
    rt.latency.record(_latency_key(job), Completion.between(after_s, by_s))


def _latency_key(job: Job) -> str:
    return latency_key(job.provider, job.upstream_model, job.operation)
