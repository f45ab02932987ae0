"""Creating jobs: `queued` items with their `submitted` events, in transactions, each on the
condition that the job does not exist yet (so a repeated submission creates nothing)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from typing import Any

from shared.aws import Aws, to_item, translated
from shared.backoff import retried
from shared.errors import BatchTaken, ConditionFailed, JobNotFound
from shared.events import EventLog
from shared.jobindex import JobQueries
from shared.timeutil import iso, utcnow
from shared.transitions import pending_key


@dataclass(frozen=True)
class NewJob:
    """A job to create: its id, status fields and task."""

    id: str
    name: str
    priority: int
    max_attempts: int
    task: dict[str, Any]
    seq: int  # dispatch order within a priority (submission order)
    submission: str | None = None  # digest of the whole submission it belongs to

    def pending(self) -> dict[str, Any]:
        """What a dispatcher reads of a pending job (its dispatch index fields)."""
        return {
            "id": self.id,
            "priority": self.priority,
            "seq": self.seq,
            "attempt": 0,
            "cores": int(self.task.get("cores", 1)),
        }


class JobCreation(JobQueries):
    """The creation of a session's jobs (and their reads)."""

    def __init__(self, aws: Aws, table: str, events: EventLog) -> None:
        super().__init__(aws, table)
        self.events = events

    def create(self, jobs: list[NewJob], *, first: bool = False) -> int:
        """Create jobs that do not exist yet (idempotent); returns how many were new.

        Jobs and their `submitted` events go in transactions of 50, each conditioned on the job
        not existing: a repeated submission creates nothing, even after a crash half-way. A
        transaction cancelled by a conflict or throttling is made again after a pause.
        `first`: these are a submission's first jobs, and if the first of them exists already
        the batch is taken (BatchTaken, nothing created): by a submission the caller compares.
        """
        created = 0
        for start in range(0, len(jobs), 50):
            chunk = jobs[start : start + 50]
            actions = [action for job in chunk for action in self._creation(job)]
            try:
                retried(partial(self._transact, "create jobs", actions))
                created += len(chunk)
            except ConditionFailed:
                if first and start == 0 and self._exists(chunk[0].id):
                    raise BatchTaken(chunk[0].id) from None
                created += self._create_one_by_one(chunk)
        return created

    def _exists(self, job_id: str) -> bool:
        try:
            self.get(job_id)
        except JobNotFound:
            return False
        return True

    def _create_one_by_one(self, jobs: list[NewJob]) -> int:
        """Each job with its event in a transaction of its own (never a job without it)."""
        created = 0
        for job in jobs:
            try:
                retried(partial(self._transact, "create job", self._creation(job)))
            except ConditionFailed:
                continue
            created += 1
        return created

    def _creation(self, job: NewJob) -> list[dict[str, Any]]:
        """The job, if it does not exist yet, and its `submitted` event."""
        item = self._new_item(job)
        event = self.events.item(job.id, "submitted", attempt=0)
        return [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": item,
                    "ConditionExpression": "attribute_not_exists(id)",
                }
            },
            {"Put": {"TableName": self.events.table, "Item": event}},
        ]

    def _transact(self, what: str, actions: list[dict[str, Any]]) -> None:
        with translated(what):
            self._aws.ddb.transact_write_items(TransactItems=actions)

    def _new_item(self, job: NewJob) -> dict[str, Any]:
        return to_item(
            {
                "id": job.id,
                "name": job.name,
                "state": "queued",
                "priority": job.priority,
                "attempt": 0,
                "max_attempts": job.max_attempts,
                "submitted_at": iso(utcnow()),
                # A JSON string, not a map: the task is read whole and never queried, and a
                # flat attribute is cheaper to store, copy and serialize.
                "task": json.dumps(job.task, separators=(",", ":")),
                "cores": int(job.task.get("cores", 1)),
                "lease_seq": 0,
                "dq": pending_key(job.priority),
                "seq": job.seq,
                "submission": job.submission,
            }
        )
