"""The job state machine's pure part: what a job becomes after an attempt ends, after its
lease is reaped, after a cancel. No AWS here: the table (shared/jobs.py) writes what these
decide, each as one conditional write (docs/design.md, "A job's life")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.records import JobState, JobTask, Reason

SENT = "sent"


def pending_key(priority: int) -> str:
    return f"pending#{priority}"


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as the agent saw it."""

    state: JobState  # SUCCEEDED, FAILED or CANCELLED
    exit_code: int | None
    reason: Reason | None
    result_key: str | None


@dataclass(frozen=True)
class Next:
    """A transition decided: the state, the fields to write (None: remove), the event."""

    state: JobState
    fields: dict[str, Any]
    event: str
    detail: str | None = None


def after_attempt(task: JobTask, outcome: Outcome, now: str) -> Next:
    """How an attempt's end is recorded: a failure with attempts left (not a cancel) goes
    back to `queued`, pending dispatch; anything else is final."""
    retry = (
        outcome.state is JobState.FAILED
        and task.attempt < task.max_attempts
        and outcome.reason is not Reason.CANCELLED
    )
    fields: dict[str, Any] = {
        "exit_code": outcome.exit_code,
        "reason": str(outcome.reason) if outcome.reason else None,
    }
    detail = _detail(outcome.reason, outcome.exit_code)
    if retry:
        fields |= {
            "state": str(JobState.QUEUED),
            "dq": pending_key(task.priority),
            "vm": None,
            "started_at": None,
        }
        return Next(JobState.QUEUED, fields, "retry", detail)
    fields |= {"state": str(outcome.state), "finished_at": now, "result_key": outcome.result_key}
    return Next(outcome.state, fields, str(outcome.state), detail)


def after_interruption(task: JobTask) -> Next:
    """An attempt its VM's interruption ended (a spot notice): back to `queued` without
    counting the attempt (it was not the job's fault): one more attempt is allowed."""
    fields: dict[str, Any] = {
        "state": str(JobState.QUEUED),
        "dq": pending_key(task.priority),
        "vm": None,
        "started_at": None,
        "exit_code": None,
        "reason": None,
        "max_attempts": task.max_attempts + 1,
    }
    return Next(JobState.QUEUED, fields, "interrupted", "its VM was interrupted: not counted")


def after_reap(item: dict[str, Any], now: str) -> Next:
    """A lease that stopped: cancelled if a cancel was asked, back to `queued` with attempts
    left, else `failed` (lost_vm)."""
    fields: dict[str, Any]
    if item.get("cancel_requested"):
        fields = {"state": str(JobState.CANCELLED), "reason": "cancelled", "finished_at": now}
        return Next(JobState.CANCELLED, fields, "cancelled")
    if int(item["attempt"]) < int(item["max_attempts"]):
        fields = {
            "state": str(JobState.QUEUED),
            "reason": str(Reason.LOST_VM),
            "vm": None,
            "started_at": None,
            "dq": pending_key(int(item["priority"])),
        }
        return Next(JobState.QUEUED, fields, "lost")
    fields = {"state": str(JobState.FAILED), "reason": str(Reason.LOST_VM), "finished_at": now}
    return Next(JobState.FAILED, fields, "lost")


def cancelled_while_queued(now: str) -> Next:
    fields: dict[str, Any] = {
        "state": str(JobState.CANCELLED),
        "reason": "cancelled",
        "finished_at": now,
        "dq": None,
    }
    return Next(JobState.CANCELLED, fields, "cancelled", "while queued")


def _detail(reason: Reason | None, exit_code: int | None) -> str | None:
    if reason is None and exit_code is None:
        return None
    parts = [str(reason)] if reason else []
    if exit_code is not None:
        parts.append(f"exit code {exit_code}")
    return ", ".join(parts)
