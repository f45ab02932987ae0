"""The VM registry: one item per VM of the session; agents register, heartbeat and obey flags.

Soft kill is not a driver call: it is the `drain` flag here, which the agent honours.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from shared.aws import Aws, from_item, to_item, to_value, translated
from shared.backoff import URGENT_CAP_S, retried
from shared.errors import ConditionFailed
from shared.records import JobState, VmRecord, VmState
from shared.tallies import add_counts
from shared.timeutil import iso, parse_iso, utcnow

_NAMES = {"#st": "state"}


AUTOSCALE_SETTING = "autoscale"  # `clobi autoscale on|off`, over the session config's


class VmTable:
    def __init__(self, aws: Aws, table: str, *, urgent_s: float = 15.0) -> None:
        """`urgent_s`: how long a VM heartbeat keeps trying through contention."""
        self._aws = aws
        self.table = table
        self._urgent_s = urgent_s

    def put_launched(self, vm_id: str, cloud: str, cores: int, instance_id: str | None) -> None:
        """Record a VM the Resource Manager launched (`starting`); idempotent."""
        item = to_item(
            {
                "id": vm_id,
                "cloud": cloud,
                "cores": cores,
                "state": "starting",
                "instance_id": instance_id,
                "started_at": iso(utcnow()),
                "drain": False,
            }
        )
        try:
            with translated("record VM"):
                self._aws.ddb.put_item(
                    TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(id)"
                )
        except ConditionFailed:
            pass

    def set_instance(self, vm_id: str, instance_id: str) -> None:
        with translated("record VM instance"):
            self._aws.ddb.update_item(
                TableName=self.table,
                Key={"id": to_value(vm_id)},
                UpdateExpression="SET instance_id = :i",
                ExpressionAttributeValues={":i": to_value(instance_id)},
            )

    def register(self, vm_id: str, cloud: str, cores: int) -> bool:
        """The agent is up: `running` (or still `draining`). Returns the drain flag."""
        now = to_value(iso(utcnow()))
        with translated("register VM"):
            out = self._aws.ddb.update_item(
                TableName=self.table,
                Key={"id": to_value(vm_id)},
                UpdateExpression=(
                    "SET cloud = :c, cores = :n, last_heartbeat_at = :now, "
                    "registered_at = :now, started_at = if_not_exists(started_at, "
                    ":now), drain = if_not_exists(drain, :no), "
                    "#st = if_not_exists(#st, :running)"
                ),
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues={
                    ":c": to_value(cloud),
                    ":n": to_value(cores),
                    ":now": now,
                    ":no": to_value(False),
                    ":running": to_value("running"),
                },
                ReturnValues="ALL_NEW",
            )
        record = from_item(out["Attributes"])
        if record["state"] == "starting":
            self.set_state(vm_id, VmState.RUNNING, expect=VmState.STARTING)
        return bool(record.get("drain"))

    def heartbeat(self, vm_id: str, running_jobs: list[str]) -> tuple[bool, set[str]]:
        """Renew the VM's heartbeat with its running jobs; returns (drain flag, jobs to cancel).
        Through throttling, on the lease path's own client (Aws.urgent)."""

        def beat() -> dict[str, Any]:
            with translated("VM heartbeat"):
                return self._aws.urgent.update_item(
                    TableName=self.table,
                    Key={"id": to_value(vm_id)},
                    UpdateExpression="SET last_heartbeat_at = :now, running_jobs = :jobs",
                    ExpressionAttributeValues={
                        ":now": to_value(iso(utcnow())),
                        ":jobs": to_value(list(running_jobs)),
                    },
                    ReturnValues="ALL_NEW",
                )

        record = from_item(retried(beat, self._urgent_s, URGENT_CAP_S)["Attributes"])
        return bool(record.get("drain")), set(record.get("cancels") or ())

    def request_cancel(self, vm_id: str, job_id: str) -> None:
        """Tell a VM's agent, through its next heartbeat, to kill a running job."""
        with translated("signal cancel to VM"):
            self._aws.ddb.update_item(
                TableName=self.table,
                Key={"id": to_value(vm_id)},
                UpdateExpression="ADD cancels :job",
                ExpressionAttributeValues={":job": {"SS": [job_id]}},
            )

    def request_drain(self, vm_id: str) -> bool:
        """Set the drain flag of a live VM; False if it is gone or unknown."""
        try:
            with translated("drain VM"):
                self._aws.ddb.update_item(
                    TableName=self.table,
                    Key={"id": to_value(vm_id)},
                    UpdateExpression="SET drain = :yes, #st = :draining",
                    ConditionExpression="#st IN (:starting, :running, :draining)",
                    ExpressionAttributeNames=_NAMES,
                    ExpressionAttributeValues={
                        ":yes": to_value(True),
                        ":draining": to_value("draining"),
                        ":starting": to_value("starting"),
                        ":running": to_value("running"),
                    },
                )
        except ConditionFailed:
            return False
        return True

    def set_state(self, vm_id: str, state: VmState, expect: VmState | None = None) -> bool:
        values: dict[str, Any] = {":s": to_value(str(state))}
        kwargs: dict[str, Any] = {}
        if expect is not None:
            kwargs["ConditionExpression"] = "#st = :e"
            values[":e"] = to_value(str(expect))
        else:
            kwargs["ConditionExpression"] = "attribute_exists(id)"
        try:
            with translated("set VM state"):
                self._aws.ddb.update_item(
                    TableName=self.table,
                    Key={"id": to_value(vm_id)},
                    UpdateExpression="SET #st = :s",
                    ExpressionAttributeNames=_NAMES,
                    ExpressionAttributeValues=values,
                    **kwargs,
                )
        except ConditionFailed:
            return False
        return True

    def get(self, vm_id: str) -> VmRecord | None:
        with translated("read VM"):
            out = self._aws.ddb.get_item(
                TableName=self.table, Key={"id": to_value(vm_id)}, ConsistentRead=True
            )
        return _record(from_item(out["Item"])) if "Item" in out else None

    def setting(self, name: str) -> bool | None:
        """A session-wide switch kept beside the VMs (item `@name`); None when never set."""
        with translated(f"read setting {name}"):
            out = self._aws.ddb.get_item(
                TableName=self.table, Key={"id": to_value(f"@{name}")}, ConsistentRead=True
            )
        return bool(from_item(out["Item"]).get("value")) if "Item" in out else None

    def set_setting(self, name: str, value: bool) -> None:
        with translated(f"write setting {name}"):
            self._aws.ddb.put_item(
                TableName=self.table, Item=to_item({"id": f"@{name}", "value": value})
            )

    def read_lease(self, name: str) -> tuple[str, int] | None:
        """A lease kept beside the VMs (item `@name`): (holder, renewal count), or None."""
        with translated(f"read lease {name}"):
            out = self._aws.ddb.get_item(
                TableName=self.table, Key={"id": to_value(f"@{name}")}, ConsistentRead=True
            )
        if "Item" not in out:
            return None
        item = from_item(out["Item"])
        return str(item["holder"]), int(item["seq"])

    def write_lease(self, name: str, holder: str, seq: int, expect: tuple[str, int] | None) -> bool:
        """Write a lease if it is still as `expect`ed (None: absent); False if not."""
        if expect is None:
            condition, values = "attribute_not_exists(id)", {}
        else:
            condition = "holder = :h AND seq = :s"
            values = {":h": to_value(expect[0]), ":s": to_value(expect[1])}
        try:
            with translated(f"write lease {name}"):
                self._aws.ddb.put_item(
                    TableName=self.table,
                    Item=to_item({"id": f"@{name}", "holder": holder, "seq": seq}),
                    ConditionExpression=condition,
                    **({"ExpressionAttributeValues": values} if values else {}),
                )
        except ConditionFailed:
            return False
        return True

    def release_lease(self, name: str, holder: str) -> None:
        """Give a lease up, if `holder` still holds it: it is left with no holder (an
        update, not a delete: the Resource Manager's role may not delete items)."""
        try:
            with translated(f"release lease {name}"):
                self._aws.ddb.update_item(
                    TableName=self.table,
                    Key={"id": to_value(f"@{name}")},
                    UpdateExpression="SET holder = :none",
                    ConditionExpression="holder = :h",
                    ExpressionAttributeValues={":h": to_value(holder), ":none": to_value("")},
                )
        except ConditionFailed:
            pass

    def all(self, finished: Counter[JobState] | None = None) -> list[VmRecord]:
        """Every VM of the session (a scan: the registry holds a few hundred items at most);
        the same scan adds the finished jobs' counts (shared/tallies.py) to `finished`."""
        items = self._scan()
        if finished is not None:
            for raw in items:
                add_counts(raw, finished)
        records = [  # not the leases and settings (`@...`), nor counts alone (a VM unknown)
            _record(raw) for raw in items if not str(raw["id"]).startswith("@") and "state" in raw
        ]
        return sorted(records, key=lambda r: (r.started_at is None, r.started_at, r.id))

    def finished(self) -> Counter[JobState]:
        """How many jobs succeeded, failed and were cancelled."""
        counts: Counter[JobState] = Counter()
        self.all(finished=counts)
        return counts

    def _scan(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        while True:
            with translated("list VMs"):
                page = self._aws.ddb.scan(**kwargs)
            items.extend(map(from_item, page.get("Items", [])))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _record(raw: dict[str, Any]) -> VmRecord:
    return VmRecord(
        id=raw["id"],
        cloud=raw.get("cloud", "?"),
        state=VmState(raw.get("state", "starting")),
        cores=int(raw.get("cores", 1)),
        instance_id=raw.get("instance_id"),
        running_jobs=tuple(raw.get("running_jobs") or ()),
        drain=bool(raw.get("drain")),
        started_at=parse_iso(raw.get("started_at")),
        last_heartbeat_at=parse_iso(raw.get("last_heartbeat_at")),
    )
