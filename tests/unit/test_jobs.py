"""The job state table: complete, terminal states closed, every live state can end, helpers agree."""

from __future__ import annotations

from collections import deque

import pytest

from shared.jobs import TERMINAL, TRANSITIONS, JobStatus, can_transition, sources_of

Q, SUB, RUN = JobStatus.QUEUED, JobStatus.SUBMITTING, JobStatus.RUNNING
OK, FAIL, TIMEOUT, CANCEL = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELLED


def _reachable(start: JobStatus) -> set[JobStatus]:
    seen, todo = {start}, deque([start])
    while todo:
        for target in TRANSITIONS[todo.popleft()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_every_job_status_is_a_key_of_the_transition_table() -> None:
    assert set(TRANSITIONS) == set(JobStatus)


def test_every_target_in_the_table_is_a_job_status() -> None:
    for targets in TRANSITIONS.values():
        assert targets <= set(JobStatus)


def test_terminal_states_are_exactly_the_four_outcomes() -> None:
    assert {OK, FAIL, TIMEOUT, CANCEL} == TERMINAL


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_terminal_state_has_no_exits(status: JobStatus) -> None:
    assert TRANSITIONS[status] == frozenset()


@pytest.mark.parametrize("status", sorted(set(JobStatus) - TERMINAL))
def test_every_non_terminal_state_can_reach_every_terminal_state(status: JobStatus) -> None:
    assert _reachable(status) >= TERMINAL


@pytest.mark.parametrize("status", sorted(set(JobStatus) - TERMINAL))
def test_every_non_terminal_state_has_a_direct_way_to_fail_time_out_and_be_cancelled(status: JobStatus) -> None:
    assert {FAIL, TIMEOUT, CANCEL} <= TRANSITIONS[status]


@pytest.mark.parametrize("src", list(JobStatus))
@pytest.mark.parametrize("dst", list(JobStatus))
def test_can_transition_agrees_with_the_table(src: JobStatus, dst: JobStatus) -> None:
    assert can_transition(src, dst) is (dst in TRANSITIONS[src])


@pytest.mark.parametrize("dst", list(JobStatus))
def test_sources_of_lists_exactly_the_states_with_an_edge_to_the_target(dst: JobStatus) -> None:
    assert sources_of(dst) == {src for src in JobStatus if can_transition(src, dst)}


def test_sources_of_examples() -> None:
    assert sources_of(RUN) == {SUB}
    assert sources_of(OK) == {SUB, RUN}
    assert sources_of(Q) == {SUB}
    assert sources_of(CANCEL) == {Q, SUB, RUN}


def test_table_matches_the_documented_lifecycle() -> None:
    # queued → submitting → running → succeeded | failed | timed_out | cancelled;
    # submitting → succeeded | failed for sync upstreams; submitting → queued hands a job back after a
    # transient error; submitting → submitting is a re-claim after a lease expired.
    assert {status: set(targets) for status, targets in TRANSITIONS.items() if status not in TERMINAL} == {
        Q: {SUB, FAIL, TIMEOUT, CANCEL},
        SUB: {SUB, Q, RUN, OK, FAIL, TIMEOUT, CANCEL},
        RUN: {OK, FAIL, TIMEOUT, CANCEL},
    }


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        pytest.param(Q, OK, id="queued-cannot-succeed-without-submitting"),
        pytest.param(Q, RUN, id="queued-cannot-skip-submitting"),
        pytest.param(RUN, Q, id="running-never-goes-back-to-queued"),
        pytest.param(RUN, SUB, id="running-never-goes-back-to-submitting"),
        pytest.param(RUN, RUN, id="running-is-not-re-entered"),
        pytest.param(Q, Q, id="queued-is-not-re-entered"),
    ],
)
def test_table_forbids_shortcuts_and_backward_moves(src: JobStatus, dst: JobStatus) -> None:
    assert not can_transition(src, dst)


def test_status_values_are_the_public_strings() -> None:
    assert [status.value for status in JobStatus] == [
        "queued",
        "submitting",
        "running",
        "succeeded",
        "failed",
        "timed_out",
        "cancelled",
    ]
