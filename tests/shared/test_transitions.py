"""The job state machine's pure part: what each end of an attempt, reap and cancel becomes."""

from __future__ import annotations

from shared.records import JobState, JobTask, Reason
from shared.transitions import Outcome, after_attempt, after_reap, cancelled_while_queued

NOW = "2026-12-06T07:00:00.000000Z"


def _task(attempt: int, max_attempts: int = 3) -> JobTask:
    return JobTask(
        id="a.0",
        name="a",
        script="a.sh",
        sandbox_key="k",
        attempt=attempt,
        max_attempts=max_attempts,
        priority=2,
    )


def test_a_failure_with_attempts_left_goes_back_to_queued_pending_dispatch() -> None:
    step = after_attempt(_task(1), Outcome(JobState.FAILED, 3, Reason.EXIT_CODE, "r"), NOW)
    assert (step.state, step.event, step.detail) == (
        JobState.QUEUED,
        "retry",
        "exit_code, exit code 3",
    )
    assert step.fields["dq"] == "pending#2" and step.fields["vm"] is None
    assert "finished_at" not in step.fields and "result_key" not in step.fields


def test_the_last_failure_a_success_and_a_cancel_are_final() -> None:
    failed = after_attempt(_task(3), Outcome(JobState.FAILED, 1, Reason.EXIT_CODE, "r"), NOW)
    assert (failed.state, failed.fields["finished_at"]) == (JobState.FAILED, NOW)
    ok = after_attempt(_task(1), Outcome(JobState.SUCCEEDED, 0, None, "r"), NOW)
    assert (ok.state, ok.event, ok.fields["result_key"], ok.fields["reason"]) == (
        JobState.SUCCEEDED,
        "succeeded",
        "r",
        None,
    )
    cancelled = Outcome(JobState.CANCELLED, None, Reason.CANCELLED, None)
    assert after_attempt(_task(1), cancelled, NOW).state is JobState.CANCELLED


def test_a_reaped_lease_requeues_fails_or_honours_a_cancel() -> None:
    item = {"attempt": 1, "max_attempts": 2, "priority": 1}
    assert after_reap(item, NOW).state is JobState.QUEUED
    assert after_reap(item, NOW).fields["reason"] == "lost_vm"
    assert after_reap({**item, "attempt": 2}, NOW).state is JobState.FAILED
    assert after_reap({**item, "cancel_requested": True}, NOW).event == "cancelled"


def test_a_queued_job_cancelled_leaves_the_dispatch_index() -> None:
    step = cancelled_while_queued(NOW)
    assert step.state is JobState.CANCELLED and step.fields["dq"] is None
