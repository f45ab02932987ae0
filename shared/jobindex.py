"""Reading the job table: by id, and through its two sparse indexes (never a scan). The
indexes' schemas are here too, next to the queries that use them (docs/design.md)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

from shared.aws import Aws, from_item, to_value, translated
from shared.backoff import pauses, retried
from shared.errors import JobNotFound
from shared.records import JobState, JobStatus
from shared.timeutil import parse_iso
from shared.transitions import SENT

STATE_INDEX = "by_state"
# What the indexes carry besides their keys: the status row, and what dispatch needs.
STATUS_FIELDS = (
    "name",
    "priority",
    "attempt",
    "max_attempts",
    "exit_code",
    "reason",
    "vm",
    "submitted_at",
    "started_at",
    "finished_at",
    "cancel_requested",
    "result_key",
    "lease_seq",
    "cores",
)
DISPATCH_FIELDS = ("priority", "attempt", "submitted_at", "cores", "dispatched_at")
DISPATCH_INDEX = "by_dispatch"


def _names() -> dict[str, str]:
    return {"#st": "state"}


class JobQueries:
    """The reads of one session's job table."""

    def __init__(self, aws: Aws, table: str) -> None:
        self._aws = aws
        self.table = table

    def get(self, job_id: str) -> dict[str, Any]:
        with translated("read job"):
            out = self._aws.ddb.get_item(
                TableName=self.table, Key={"id": to_value(job_id)}, ConsistentRead=True
            )
        if "Item" not in out:
            raise JobNotFound(f"no job {job_id}")
        return from_item(out["Item"])

    def get_many(self, job_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Items by id (BatchGetItem, 100 a request, unprocessed keys asked again with backoff);
        unknown ids are left out."""
        ids = list(dict.fromkeys(job_ids))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 100):
            keys = [{"id": to_value(i)} for i in ids[start : start + 100]]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
            waits = pauses()
            while True:
                out = retried(partial(self._batch_get, request))
                for item in out.get("Responses", {}).get(self.table, []):
                    job = from_item(item)
                    found[job["id"]] = job
                request = out.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(next(waits))  # what DynamoDB left unread: again, after a pause
        return found

    def _batch_get(self, request: dict[str, Any]) -> dict[str, Any]:
        with translated("read jobs"):
            return self._aws.ddb.batch_get_item(RequestItems=request)

    def by_state(self, state: JobState) -> Iterator[dict[str, Any]]:
        """Every job in a state, through the state index (a query, never a scan)."""
        yield from self._query(STATE_INDEX, "#st = :s", {":s": to_value(str(state))}, _names())

    def by_dispatch(self, key: str, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Queued jobs pending dispatch at one priority (oldest first), or those `sent`."""
        yield from self._query(DISPATCH_INDEX, "dq = :d", {":d": to_value(key)}, None, limit)

    def count_sent(self) -> int:
        """Jobs whose message is out in the queues (the dispatch window's fill)."""
        return self._count(DISPATCH_INDEX, "dq = :d", {":d": to_value(SENT)}, None)

    def count_state(self, state: JobState) -> int:
        """How many jobs are in a state (a counting query on the state index)."""
        return self._count(STATE_INDEX, "#st = :s", {":s": to_value(str(state))}, _names())

    def _count(
        self, index: str, condition: str, values: dict[str, Any], names: dict[str, str] | None
    ) -> int:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": index,
            "Select": "COUNT",
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        if names:
            kwargs["ExpressionAttributeNames"] = names
        total = 0
        while True:
            with translated("count jobs"):
                page = self._aws.ddb.query(**kwargs)
            total += int(page.get("Count", 0))
            if "LastEvaluatedKey" not in page:
                return total
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _query(
        self,
        index: str,
        condition: str,
        values: dict[str, Any],
        names: dict[str, str] | None,
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if limit:
            kwargs["Limit"] = limit
        while True:
            with translated("query jobs"):
                page = self._aws.ddb.query(**kwargs)
            yield from (from_item(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page or limit:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def status_of(item: dict[str, Any]) -> JobStatus:
    """The public status row of a job item."""
    return JobStatus(
        id=item["id"],
        name=item.get("name", ""),
        state=JobState(item["state"]),
        priority=int(item["priority"]),
        attempt=int(item.get("attempt", 0)),
        exit_code=item.get("exit_code"),
        reason=item.get("reason"),
        vm=item.get("vm"),
        submitted_at=parse_iso(item.get("submitted_at")),
        started_at=parse_iso(item.get("started_at")),
        finished_at=parse_iso(item.get("finished_at")),
        cancel_requested=bool(item.get("cancel_requested", False)),
        max_attempts=int(item.get("max_attempts", 1)),
        result_key=item.get("result_key"),
    )
