"""The lifecycle event log: one item per transition, read back in time order per job."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from shared.aws import Aws, from_item, to_item, to_value, translated
from shared.backoff import pauses, retried
from shared.timeutil import iso, parse_iso, utcnow

SESSION_KEY = "-"  # events about the session or its VMs, not a job
SUBMISSIONS_KEY = "+"  # one item per submission: its batch and how many jobs it made


@dataclass(frozen=True)
class Event:
    job_id: str
    at: datetime
    kind: str
    attempt: int | None = None
    vm: str | None = None
    detail: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "job": self.job_id,
            "at": iso(self.at),
            "kind": self.kind,
            "attempt": self.attempt,
            "vm": self.vm,
            "detail": self.detail,
        }


class EventLog:
    def __init__(self, aws: Aws, table: str) -> None:
        self._aws = aws
        self.table = table

    def item(
        self,
        job_id: str,
        kind: str,
        *,
        attempt: int | None = None,
        vm: str | None = None,
        detail: str | None = None,
    ) -> dict[str, Any]:
        """The DynamoDB item of one event (for batch or transactional writes)."""
        at = utcnow()
        return to_item(
            {
                "job_id": job_id,
                "sk": f"{iso(at)}#{secrets.token_hex(3)}",
                "kind": kind,
                "attempt": attempt,
                "vm": vm,
                "detail": detail,
            }
        )

    def append(self, job_id: str, kind: str, **fields: Any) -> None:
        with translated("append event"):
            self._aws.ddb.put_item(TableName=self.table, Item=self.item(job_id, kind, **fields))

    def append_many(self, items: list[dict[str, Any]]) -> None:
        """Events by 25 (BatchWriteItem, unprocessed items written again with backoff)."""
        for start in range(0, len(items), 25):
            requests = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
            waits = pauses()
            while True:
                out = retried(partial(self._batch_write, requests))
                requests = out.get("UnprocessedItems", {}).get(self.table, [])
                if not requests:
                    break
                time.sleep(next(waits))  # what DynamoDB left unwritten: again, after a pause

    def _batch_write(self, requests: list[dict[str, Any]]) -> dict[str, Any]:
        with translated("append events"):
            out = self._aws.ddb.batch_write_item(RequestItems={self.table: requests})
        return out

    def for_job(self, job_id: str) -> list[Event]:
        return [_event(raw) for raw in self._partition(job_id)]

    def record_submission(self, batch: str, count: int) -> None:
        """That the submission `batch` made jobs `<batch>.0` .. `<batch>.<count-1>`; written
        once they all exist, so a reader never waits for a job that is not there. Repeating
        it (a resumed submit) writes the same item again."""
        item = {"job_id": SUBMISSIONS_KEY, "sk": batch, "count": count, "at": iso(utcnow())}

        def put() -> None:
            with translated("record the submission"):
                self._aws.ddb.put_item(TableName=self.table, Item=to_item(item))

        retried(put)

    def submissions(self) -> dict[str, int]:
        """Every complete submission of the session, batch -> job count: a consistent read of
        the base table (no index lag), so a job submitted before the call is never missed."""
        return {raw["sk"]: int(raw["count"]) for raw in self._partition(SUBMISSIONS_KEY)}

    def _partition(self, key: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "job_id = :j",
            "ExpressionAttributeValues": {":j": to_value(key)},
            "ConsistentRead": True,
        }
        while True:
            with translated("read events"):
                page = self._aws.ddb.query(**kwargs)
            found.extend(from_item(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _event(raw: dict[str, Any]) -> Event:
    at = parse_iso(raw["sk"].split("#", 1)[0])
    assert at is not None
    return Event(
        raw["job_id"], at, raw["kind"], raw.get("attempt"), raw.get("vm"), raw.get("detail")
    )
