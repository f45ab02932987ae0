"""The job table and its state machine (docs/design.md, "A job's life"): every transition
is one conditional write.

DynamoDB holds the truth. A job item is created `queued` and pending dispatch; the dispatcher
marks it `sent` when a message is released; a claim sets owner, lease and the fencing attempt;
every later write of that attempt is conditioned on still owning it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any

from shared.aws import from_item, to_value, translated
from shared.backoff import URGENT_CAP_S, retried
from shared.errors import ConditionFailed, Contention, InvalidJob, JobNotFound
from shared.jobindex import _names
from shared.jobwrites import JobWrites
from shared.records import JobState, JobTask, Reason
from shared.timeutil import iso, utcnow
from shared.transitions import (
    SENT,
    Outcome,
    after_attempt,
    after_interruption,
    after_reap,
    cancelled_while_queued,
    pending_key,
)

MARK_BUDGET_S = 2.0  # a dispatcher meeting contention leaves the rest to the next fill
_OWNED = "#st IN (:running, :saving) AND attempt = :att AND vm = :vm"


def _owned_values(attempt: int, vm: str) -> dict[str, Any]:
    return {
        ":running": to_value("running"),
        ":saving": to_value("saving"),
        ":att": to_value(attempt),
        ":vm": to_value(vm),
    }


class JobTable(JobWrites):
    """Conditional operations on one session's job table. Each method is one logical transition.

    A write that meets contention (throttling, a transaction conflict) is made again after a
    jittered pause: a lease renewal for a quarter of the lease, a completion till it lands
    or its attempt is fenced (the reaper's, after `lease_s`), others for WRITE_BUDGET_S."""

    # --- dispatch -----------------------------------------------------------------------------

    def mark_sent(
        self, items: list[dict[str, Any]], at: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Take jobs out of the pending set to send their messages (recorded as sent `at`), in
        transactions of 10; returns those this caller took. A lost condition means another
        dispatcher is at the same jobs right now: this one stops and leaves the rest to it; so
        does contention that outlasts a short retry: what it took is returned, to be sent."""
        taken: list[dict[str, Any]] = []
        sent_at = iso(at or utcnow())
        for start in range(0, len(items), 10):
            chunk = items[start : start + 10]
            updates = [{"Update": self._sent_update(item, sent_at)} for item in chunk]
            try:
                retried(partial(self._transact, "dispatch jobs", updates), MARK_BUDGET_S)
            except (ConditionFailed, Contention):
                break
            taken.extend(chunk)
        return taken

    def _sent_update(self, item: dict[str, Any], sent_at: str | None) -> dict[str, Any]:
        return {
            "TableName": self.table,
            "Key": {"id": to_value(item["id"])},
            "UpdateExpression": "SET dq = :sent, dispatched_at = :now",
            "ConditionExpression": "dq = :pending AND #st = :queued",
            "ExpressionAttributeNames": _names(),
            "ExpressionAttributeValues": {
                ":sent": to_value(SENT),
                ":now": to_value(sent_at),
                ":pending": to_value(pending_key(int(item["priority"]))),
                ":queued": to_value("queued"),
            },
        }

    def mark_resent(self, job_id: str, dispatched_at: str, at: datetime) -> bool:
        """Record that a sent job's message is sent again (to a higher queue) `at`; False if
        it was claimed, or another dispatcher did it, since it was read as sent then."""
        condition = "dq = :sent AND #st = :queued AND dispatched_at = :then"
        values = {
            ":sent": to_value(SENT),
            ":queued": to_value("queued"),
            ":then": to_value(dispatched_at),
            ":now": to_value(iso(at)),
        }
        return self._write(job_id, "SET dispatched_at = :now", condition, values)

    def mark_pending(self, job_id: str, priority: int, dispatched_at: str | None) -> bool:
        """Put a dispatched job back into the pending set (its message failed or went missing)."""
        condition = "dq = :sent AND #st = :queued"
        values = {
            ":sent": to_value(SENT),
            ":queued": to_value("queued"),
            ":pending": to_value(pending_key(priority)),
        }
        if dispatched_at is not None:
            condition += " AND dispatched_at = :at"
            values[":at"] = to_value(dispatched_at)
        return self._write(job_id, "SET dq = :pending", condition, values)

    # --- the attempt: claim, heartbeat, saving, complete ----------------------------------------

    def claim(self, job_id: str, attempt: int, vm: str) -> JobTask | None:
        """Conditionally take a queued job; None if it is not queued at that attempt any more.
        The `started` event is written with the attempt's next write (see `started_event`)."""
        token = secrets.token_hex(8)  # tells this claim from any other, our own included

        def claim() -> dict[str, Any]:
            with translated("claim job"):
                return self._aws.ddb.update_item(
                    TableName=self.table,
                    Key={"id": to_value(job_id)},
                    UpdateExpression=(
                        "SET #st = :running, attempt = :next, vm = :vm, "
                        "started_at = :now, lease_seq = :zero, claim = :claim "
                        "REMOVE dq, dispatched_at, finished_at, exit_code"
                    ),
                    ConditionExpression=(
                        "#st = :queued AND attempt = :att "
                        "AND attribute_not_exists(cancel_requested)"
                    ),
                    ExpressionAttributeNames=_names(),
                    ExpressionAttributeValues={
                        ":running": to_value("running"),
                        ":queued": to_value("queued"),
                        ":att": to_value(attempt),
                        ":next": to_value(attempt + 1),
                        ":vm": to_value(vm),
                        ":now": to_value(iso(utcnow())),
                        ":zero": to_value(0),
                        ":claim": to_value(token),
                    },
                    ReturnValues="ALL_NEW",
                )

        try:
            item = from_item(retried(claim, self._urgent_s)["Attributes"])
        except ConditionFailed:
            # Ours after all if a retry of this very request (its first answer lost) found
            # its own write: the claim token is this call's, and nothing happened since.
            try:
                item = self.get(job_id)
            except JobNotFound:
                return None
            if not (item.get("claim") == token and item["state"] == "running"):
                return None
            if int(item["attempt"]) != attempt + 1 or item.get("lease_seq") != 0:
                return None
        try:
            return JobTask(
                id=job_id,
                name=item["name"],
                priority=int(item["priority"]),
                attempt=int(item["attempt"]),
                max_attempts=int(item["max_attempts"]),
                **json.loads(item["task"]),
            )
        except (KeyError, TypeError, ValueError) as err:  # pydantic's errors are ValueErrors
            raise InvalidJob(f"job {job_id}: its item holds no valid task") from err

    def reject(self, job_id: str, attempt: int, vm: str, detail: str) -> bool:
        """A claimed job whose task fails the agent's checks: `failed` (invalid) at once,
        never retried, as the owner of the attempt. False if it was not ours any more."""
        event = self.events.item(
            job_id, "failed", attempt=attempt, vm=vm, detail=f"invalid: {detail}"[:500]
        )
        fields = {"state": "failed", "reason": "invalid", "finished_at": iso(utcnow())}
        return self._transition(job_id, fields, _OWNED, _owned_values(attempt, vm), [event], by=vm)

    def started_event(self, task: JobTask, vm: str) -> dict[str, Any]:
        return self.events.item(task.id, "started", attempt=task.attempt, vm=vm)

    def renew(self, task: JobTask, vm: str, events: Sequence[dict[str, Any]] = ()) -> bool | None:
        """Renew the lease (writing any events of the attempt held back till now). Returns
        whether a cancel was requested, or None if the attempt is no longer ours."""
        values = {":one": to_value(1), **_owned_values(task.attempt, vm)}
        if events:
            ok = self._write(
                task.id, "SET lease_seq = lease_seq + :one", _OWNED, values, events, urgent=True
            )
            return False if ok else None

        def renew() -> dict[str, Any]:
            with translated("renew lease"):
                return self._aws.urgent.update_item(
                    TableName=self.table,
                    Key={"id": to_value(task.id)},
                    UpdateExpression="SET lease_seq = lease_seq + :one",
                    ConditionExpression=_OWNED,
                    ExpressionAttributeNames=_names(),
                    ExpressionAttributeValues=values,
                    ReturnValues="ALL_NEW",
                )

        try:
            out = retried(renew, self._urgent_s, URGENT_CAP_S)
        except ConditionFailed:
            return None
        return bool(out["Attributes"].get("cancel_requested", {}).get("BOOL", False))

    def start_saving(self, task: JobTask, vm: str) -> bool:
        return self._transition(
            task.id, {"state": "saving"}, _OWNED, _owned_values(task.attempt, vm), by=vm
        )

    def complete(
        self,
        task: JobTask,
        vm: str,
        outcome: Outcome,
        events: Sequence[dict[str, Any]] = (),
        *,
        interrupted: bool = False,
    ) -> JobState | None:
        """Record how an attempt ended, once, as its owner, with its event (and any held
        back) in the same transaction. A failure with attempts left goes back to `queued`;
        one its VM's interruption caused goes back without counting. Returns the state
        written, or None if the attempt was superseded."""
        if interrupted and outcome.state is not JobState.SUCCEEDED:
            step = after_interruption(task)
        else:
            step = after_attempt(task, outcome, iso(utcnow()))
        event = self.events.item(
            task.id, step.event, attempt=task.attempt, vm=vm, detail=step.detail
        )
        ok = self._transition(
            task.id,
            step.fields,
            _OWNED,
            _owned_values(task.attempt, vm),
            [*events, event],
            budget_s=self._settle_s,
            by=vm,
        )
        return step.state if ok else None

    # --- cancel and the reaper ----------------------------------------------------------------

    def cancel(self, job_id: str) -> JobState | None:
        """Cancel a queued job now, or flag a running one for its agent. None if already over."""
        step = cancelled_while_queued(iso(utcnow()))
        if self._transition(
            job_id,
            step.fields,
            "#st = :queued",
            {":queued": to_value("queued")},
            [self.events.item(job_id, step.event, detail=step.detail)],
        ):
            return JobState.CANCELLED
        if self._transition(
            job_id,
            {"cancel_requested": True},
            "#st IN (:running, :saving)",
            {":running": to_value("running"), ":saving": to_value("saving")},
            [self.events.item(job_id, "cancel_requested")],
        ):
            return JobState.RUNNING
        return None

    def refuse(self, job_id: str, reason: Reason, detail: str) -> bool:
        """Fail a queued job that can never run (reason and detail say why); False if it
        was not queued any more."""
        fields = {
            "state": "failed",
            "reason": str(reason),
            "finished_at": iso(utcnow()),
            "dq": None,
        }
        event = self.events.item(job_id, "failed", detail=f"{reason}: {detail}"[:500])
        return self._transition(
            job_id, fields, "#st = :queued", {":queued": to_value("queued")}, [event]
        )

    def reap(self, job_id: str, attempt: int, lease_seq: int, detail: str) -> JobState | None:
        """A lease that stopped: back to `queued`, or `failed` (lost_vm) with no attempts left."""
        item = self.get(job_id)
        if int(item["attempt"]) != attempt or int(item.get("lease_seq", 0)) != lease_seq:
            return None
        step = after_reap(item, iso(utcnow()))
        condition = "#st IN (:running, :saving) AND attempt = :att AND lease_seq = :seq"
        values = {
            ":running": to_value("running"),
            ":saving": to_value("saving"),
            ":att": to_value(attempt),
            ":seq": to_value(lease_seq),
        }
        event = self.events.item(
            job_id, step.event, attempt=attempt, vm=item.get("vm"), detail=detail
        )
        written = self._transition(job_id, step.fields, condition, values, [event])
        return step.state if written else None
