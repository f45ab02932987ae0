"""How the job table writes: one conditional update, with the transition's events (and the
count of a job it finishes, shared/tallies.py) in the same transaction, made again through
contention (shared/backoff.py). The transitions themselves are in shared/jobs.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.aws import Aws, to_value, translated
from shared.backoff import CAP_S, URGENT_CAP_S, WRITE_BUDGET_S, retried
from shared.errors import ConditionFailed
from shared.events import EventLog
from shared.jobcreate import JobCreation
from shared.jobindex import _names
from shared.records import JobState
from shared.tallies import count_update, counter_key


class JobWrites(JobCreation):
    def __init__(
        self, aws: Aws, table: str, events: EventLog, counts: str, *, lease_s: float = 60.0
    ) -> None:
        """`counts`: the table finished jobs are counted in (shared/tallies.py)."""
        super().__init__(aws, table, events)
        self.counts = counts
        self._urgent_s = lease_s / 4
        self._settle_s = max(WRITE_BUDGET_S, 2 * lease_s)

    def _transition(
        self,
        job_id: str,
        fields: dict[str, Any],
        condition: str,
        values: dict[str, Any],
        events: Sequence[dict[str, Any]] = (),
        budget_s: float = WRITE_BUDGET_S,
        by: str | None = None,
    ) -> bool:
        """SET the fields that have a value and REMOVE those that are None, if the condition
        holds, and append the events in the same transaction; a job that finishes is counted
        there too (on `by`'s VM record, the writing agent's). False if it did not hold."""
        state = fields.get("state")
        also = []
        if state is not None and JobState(state).terminal:
            also.append(count_update(self.counts, counter_key(by, job_id), JobState(state)))
        sets, removes = [], []
        values = dict(values)
        for index, (name, value) in enumerate(fields.items()):
            attr = "#st" if name == "state" else name
            if value is None:
                removes.append(attr)
            else:
                sets.append(f"{attr} = :f{index}")
                values[f":f{index}"] = to_value(value)
        update = ("SET " + ", ".join(sets)) if sets else ""
        if removes:
            update += " REMOVE " + ", ".join(removes)
        # An attempt's own writes are paced as its lease renewals are: it holds its write
        # turn meanwhile, so its lease is not renewed until they land.
        cap_s = URGENT_CAP_S if by else CAP_S
        return self._write(
            job_id,
            update.strip(),
            condition,
            values,
            events,
            budget_s=budget_s,
            also=also,
            cap_s=cap_s,
        )

    def _write(
        self,
        job_id: str,
        update: str,
        condition: str,
        values: dict[str, Any],
        events: Sequence[dict[str, Any]] = (),
        *,
        budget_s: float = WRITE_BUDGET_S,
        urgent: bool = False,
        also: Sequence[dict[str, Any]] = (),
        cap_s: float = CAP_S,
    ) -> bool:
        """One conditional update, with events (and `also`, more transaction items) in the
        same transaction when there are any, made again through contention for `budget_s`
        (`urgent`: on the lease path)."""
        update_args: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"id": to_value(job_id)},
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        if "#st" in update + condition:
            update_args["ExpressionAttributeNames"] = _names()
        ddb = self._aws.urgent if urgent else self._aws.ddb
        what = f"update job {job_id}"
        puts = [{"Put": {"TableName": self.events.table, "Item": e}} for e in events]
        puts += also

        def write() -> None:
            with translated(what):
                if puts:
                    ddb.transact_write_items(TransactItems=[{"Update": update_args}, *puts])
                else:
                    ddb.update_item(**update_args)

        try:
            retried(
                write, self._urgent_s if urgent else budget_s, URGENT_CAP_S if urgent else cap_s
            )
        except ConditionFailed:
            return False
        return True
