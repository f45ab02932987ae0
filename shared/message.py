"""The job message: only a hint that a job may be ready. The spec lives in DynamoDB and S3."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeGuard

from shared.naming import is_job_id

MAX_ATTEMPTS = 100  # as a session's max_attempts
MAX_CORES = 256  # as a VM's cores

VERSION = 1


@dataclass(frozen=True)
class JobMessage:
    session: str
    job_id: str
    attempt: int  # the job's attempt count when the message was sent; stale messages lose the claim
    cores: int = 1  # so an agent can hand back what does not fit its free slots unclaimed

    def encode(self) -> str:
        body = {"v": VERSION, "s": self.session, "j": self.job_id, "a": self.attempt}
        if self.cores != 1:
            body["c"] = self.cores
        return json.dumps(body, separators=(",", ":"))


def wake(session: str) -> str:
    """A doorbell for idle agents, which long-poll the lowest queue only (see dispatch.py)."""
    return json.dumps({"v": VERSION, "s": session, "wake": True}, separators=(",", ":"))


def decode(body: str) -> JobMessage | None:
    """Parse a message body: a job hint, or None for a wake-up; ValueError for anything that
    is not a message of ours."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON: {err.msg}") from None
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise ValueError("not a clobi job message")
    session, job_id, attempt = data.get("s"), data.get("j"), data.get("a")
    if data.get("wake") is True and isinstance(session, str):
        return None
    if not isinstance(session, str) or not isinstance(job_id, str) or not is_job_id(job_id):
        raise ValueError("message names no job")
    if not _within(attempt, 0, MAX_ATTEMPTS - 1):  # the attempts made so far
        raise ValueError("message has no valid attempt")
    cores = data.get("c", 1)
    if not _within(cores, 1, MAX_CORES):
        raise ValueError("message has no valid core count")
    return JobMessage(session, job_id, attempt, cores)


def _within(value: Any, low: int, high: int) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
