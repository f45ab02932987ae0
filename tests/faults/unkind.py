"""An endpoint as unkind as AWS: the behaviours AWS documents and moto spares us (lagging
indexes, cancelled transactions, throttling bursts, EC2's eventual consistency, short polls
that miss messages), each at a rate, a delay and a seed, in the FaultProxy.

    with FaultProxy(endpoint, unkind=unkind(seed=7)) as proxy: ...
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from tests.faults.proxy import Request

Answer = tuple[int, str, bytes]  # status, content type, body
_DDB = "com.amazonaws.dynamodb.v20120810#"
_JSON = "application/x-amz-json-1.0"
_WRITES = ("PutItem", "UpdateItem", "DeleteItem")
_THROTTLE_CODES = {
    "dynamodb": "ProvisionedThroughputExceededException",
    "sqs": "ThrottlingException",
    "ec2": "RequestLimitExceeded",
    "s3": "SlowDown",
}


@dataclass(frozen=True)
class Burst:
    """Throttling of one service (`dynamodb`, `sqs`, `ec2`, `s3`): for `burst_s` out of every
    `period_s` (`period_s` 0: always), a request is refused at `rate`."""

    service: str
    rate: float
    burst_s: float = 0.0
    period_s: float = 0.0

    def on(self, elapsed_s: float) -> bool:
        return not self.period_s or elapsed_s % self.period_s < self.burst_s


@dataclass(frozen=True)
class Unkind:
    """What the endpoint does that moto does not. Rates are chances per request (0: never).

    - `gsi_lag_s`: a Query or Scan on an index sees an item written less than that ago as it
      was before the write (or not at all if nobody read it before);
    - `txn_conflict_rate`, `txn_throttle_rate`: TransactWriteItems cancelled with reason
      `TransactionConflict` or `ThrottlingError` (nothing applied);
    - `write_conflict_rate`: PutItem/UpdateItem/DeleteItem refused with
      TransactionConflictException (nothing applied);
    - `unprocessed_rate`: BatchWriteItem answered with every item unprocessed (nothing
      written), BatchGetItem with about half of its keys unprocessed;
    - `bursts`: throttling per service;
    - `ec2_lag_s`: an instance or volume created less than that ago is missing from
      Describe* (NotFound when asked by id, left out of a filtered answer);
    - `short_poll_miss_rate`: a ReceiveMessage without a wait answers empty;
    - `only`: the requests it is unkind to (one component's, say); others pass.
    """

    seed: int = 0
    gsi_lag_s: float = 0.0
    txn_conflict_rate: float = 0.0
    txn_throttle_rate: float = 0.0
    write_conflict_rate: float = 0.0
    unprocessed_rate: float = 0.0
    bursts: tuple[Burst, ...] = ()
    ec2_lag_s: float = 0.0
    short_poll_miss_rate: float = 0.0
    only: Callable[[Request], bool] | None = None


def unkind(seed: int = 0, **overrides: Any) -> Unkind:
    """All of it at rates that make faults frequent in a short run, yet let work go on."""
    values: dict[str, Any] = {
        "seed": seed,
        "gsi_lag_s": 1.0,
        "txn_conflict_rate": 0.05,
        "txn_throttle_rate": 0.02,
        "write_conflict_rate": 0.02,
        "unprocessed_rate": 0.2,
        "bursts": (
            Burst("dynamodb", rate=0.5, burst_s=2.0, period_s=10.0),
            Burst("sqs", rate=0.3, burst_s=1.0, period_s=7.0),
            Burst("ec2", rate=0.5, burst_s=2.0, period_s=9.0),
            Burst("s3", rate=0.2, burst_s=1.0, period_s=11.0),
        ),
        "ec2_lag_s": 2.0,
        "short_poll_miss_rate": 0.3,
    }
    return Unkind(**(values | overrides))


@dataclass
class _Snapshot:
    at: float
    items: dict[str, dict[str, Any]]  # by key
    count: int


@dataclass
class UnkindEndpoint:
    """The state behind an Unkind: its dice, what was written or created when, what each
    index request answered before. `injected` counts what it did, by kind."""

    config: Unkind
    injected: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.become(self.config)
        self._keys: dict[str, tuple[str, ...]] = {}  # table: its key attributes
        self._written: dict[tuple[str, str], float] = {}  # (table, key): when
        self._snapshots: dict[bytes, list[_Snapshot]] = {}  # index request: its answers
        self._created: dict[str, float] = {}  # EC2 instance or volume id: when

    def become(self, config: Unkind) -> None:
        """Behave as `config` says from now on (its dice and bursts start afresh); what was
        learnt (the tables' keys, what was written and created when) is kept."""
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)
            self._began = time.monotonic()

    def _roll(self, rate: float, kind: str) -> bool:
        with self._lock:
            hit = rate > 0 and self._rng.random() < rate
            if hit:
                self.injected[kind] += 1
        return hit

    def _applies(self, request: Request) -> bool:
        return self.config.only is None or self.config.only(request)

    # --- before forwarding: refuse, or answer in AWS's place ----------------------------------

    def before(self, request: Request) -> Answer | None:
        if not self._applies(request):
            return None
        service, _, action = request.operation.partition(".")
        elapsed = time.monotonic() - self._began
        for burst in self.config.bursts:
            on = burst.service == service and burst.on(elapsed)
            if on and self._roll(burst.rate, f"throttle {service}"):
                return _throttled(service)
        if service == "dynamodb":
            return self._dynamodb_before(action, request.body)
        short = service == "sqs" and action == "ReceiveMessage" and _short_poll(request.body)
        if short and self._roll(self.config.short_poll_miss_rate, "short poll missed"):
            return 200, _JSON, b"{}"
        if service == "ec2" and self.config.ec2_lag_s:
            return self._ec2_not_found(action, request.body)
        return None

    def _dynamodb_before(self, action: str, body: bytes) -> Answer | None:
        config = self.config
        if action == "TransactWriteItems":
            size = len(json.loads(body).get("TransactItems", []))
            if self._roll(config.txn_conflict_rate, "transaction conflict"):
                return _cancelled(size, "TransactionConflict", self._rng)
            if self._roll(config.txn_throttle_rate, "transaction throttled"):
                return _cancelled(size, "ThrottlingError", self._rng)
        if action in _WRITES and self._roll(config.write_conflict_rate, "write conflict"):
            return _error("TransactionConflictException", "Transaction is ongoing for the item")
        if action == "BatchWriteItem" and self._roll(config.unprocessed_rate, "unprocessed"):
            unprocessed = {"UnprocessedItems": json.loads(body)["RequestItems"]}
            return 200, _JSON, json.dumps(unprocessed).encode()
        return None

    # --- after forwarding: remember, and show the past ----------------------------------------

    def after(self, request: Request, status: int, payload: bytes) -> bytes:
        """What the caller sees of an answer; everything passing is learnt from, even what
        this endpoint is not unkind to (`only`)."""
        service, _, action = request.operation.partition(".")
        if status != 200:
            return payload
        unkind_here = self._applies(request)
        if service == "dynamodb":
            body = json.loads(request.body or b"{}")
            self._learn(action, body)
            return self._dynamodb_after(action, body, payload) if unkind_here else payload
        if service == "ec2" and self.config.ec2_lag_s and unkind_here:
            return self._ec2_after(action, payload)
        return payload

    def _learn(self, action: str, body: dict[str, Any]) -> None:
        if action == "CreateTable":
            keys = tuple(k["AttributeName"] for k in body.get("KeySchema", []))
            self._keys[body["TableName"]] = keys
        if action not in (*_WRITES, "TransactWriteItems", "BatchWriteItem"):
            return
        now = time.monotonic()
        with self._lock:
            for table, key in self._writes(action, body):
                self._written[(table, key)] = now
            if len(self._written) > 10_000:  # only the young ones matter
                since = now - self.config.gsi_lag_s
                self._written = {k: at for k, at in self._written.items() if at > since}

    def _dynamodb_after(self, action: str, body: dict[str, Any], payload: bytes) -> bytes:
        if action in ("Query", "Scan") and body.get("IndexName") and self.config.gsi_lag_s:
            return self._lagging(body, payload)
        if action == "BatchGetItem" and self._roll(self.config.unprocessed_rate, "unprocessed"):
            return self._unprocessed(body, payload)
        return payload

    def _unprocessed(self, body: dict[str, Any], payload: bytes) -> bytes:
        """About half of what was read, handed back as unprocessed keys."""
        answer = json.loads(payload)
        for table, items in answer.get("Responses", {}).items():
            with self._lock:
                left = [i for i in items if self._rng.random() < 0.5]
            if not left:
                continue
            names = self._keys.get(table) or tuple(body["RequestItems"][table]["Keys"][0])
            keys = [{n: i[n] for n in names} for i in left]
            answer["Responses"][table] = [i for i in items if i not in left]
            unprocessed = answer.setdefault("UnprocessedKeys", {})
            unprocessed[table] = {**body["RequestItems"][table], "Keys": keys}
        return json.dumps(answer).encode()

    def _writes(self, action: str, body: dict[str, Any]) -> list[tuple[str, str]]:
        if action == "TransactWriteItems":
            parts = [next(iter(a.values())) for a in body.get("TransactItems", [])]
        elif action == "BatchWriteItem":
            parts = [
                {"TableName": table, **next(iter(r.values()))}
                for table, requests in body.get("RequestItems", {}).items()
                for r in requests
            ]
        else:
            parts = [body]
        for part in parts:  # a table created behind another proxy: its keys, as named here
            if "Key" in part:
                self._keys.setdefault(part["TableName"], tuple(sorted(part["Key"])))
        return [
            (p["TableName"], self._key(p["TableName"], p.get("Key") or p["Item"])) for p in parts
        ]

    def _key(self, table: str, item: dict[str, Any]) -> str:
        """An item's key, by the table's key attributes (from its CreateTable, or as a write
        named them); an item of a table not known yet counts as keyed by all it holds."""
        names = self._keys.get(table) or tuple(sorted(item))
        return json.dumps([item.get(n) for n in names], sort_keys=True)

    def _lagging(self, body: dict[str, Any], payload: bytes) -> bytes:
        """The answer as the index had it before any write younger than `gsi_lag_s`: such an
        item is shown as the last answer of the same request taken before its write had it
        (absent if none was), and one that moved out of this answer is shown still in it."""
        table, now, lag = body["TableName"], time.monotonic(), self.config.gsi_lag_s
        answer = json.loads(payload)
        request = json.dumps(body, sort_keys=True).encode()
        true_items = {self._key(table, i): i for i in answer.get("Items", [])}
        with self._lock:
            history = self._snapshots.setdefault(request, [])
            history.append(_Snapshot(now, true_items, int(answer.get("Count", 0))))
            while len(history) > 1 and history[1].at < now - 2 * lag:
                history.pop(0)
            recent = {
                key: at for (t, key), at in self._written.items() if t == table and at > now - lag
            }
            if "Items" not in answer:  # a count: the oldest one younger than the lag
                old = next((s for s in history if s.at > now - lag), history[-1])
                answer["Count"] = old.count
                return json.dumps(answer).encode()
            shown = {k: v for k, v in true_items.items() if k not in recent}
            for key, written_at in recent.items():
                before = [s for s in history if s.at < written_at]
                if before and key in before[-1].items:
                    shown[key] = before[-1].items[key]
        if len(shown) != len(true_items) or any(shown[k] is not true_items.get(k) for k in shown):
            self.injected["stale index read"] += 1
        answer["Items"] = list(shown.values())
        answer["Count"] = answer["ScannedCount"] = len(shown)
        return json.dumps(answer).encode()

    # --- EC2: what was just created is not there yet ------------------------------------------

    def _ec2_after(self, action: str, payload: bytes) -> bytes:
        if action in ("RunInstances", "CreateVolume"):
            ids = re.findall(rb"<(?:instanceId|volumeId)>([^<]+)<", payload)
            with self._lock:
                for made in ids:
                    self._created.setdefault(made.decode(), time.monotonic())
            return payload
        hidden = self._hidden()
        if action not in ("DescribeInstances", "DescribeVolumes") or not hidden:
            return payload
        root = ET.fromstring(payload)
        namespace = root.tag.partition("}")[0] + "}" if root.tag.startswith("{") else ""
        removed = 0
        for holder in root.iter():
            for item in list(holder.findall(f"{namespace}item")):
                ids = {e.text for e in item.iter() if e.tag.endswith(("instanceId", "volumeId"))}
                if ids and ids <= hidden:
                    holder.remove(item)
                    removed += 1
        if not removed:
            return payload
        self.injected["ec2 describe missing"] += 1
        ET.register_namespace("", namespace.strip("{}"))
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)

    def _ec2_not_found(self, action: str, body: bytes) -> Answer | None:
        if action not in ("DescribeInstances", "DescribeVolumes", "DescribeInstanceStatus"):
            return None
        asked = {v for k, v in parse_qsl(body.decode()) if re.match(r"(Instance|Volume)Id\.", k)}
        missing = sorted(asked & self._hidden())
        if not missing:
            return None
        self.injected["ec2 not found"] += 1
        code = "InvalidVolume" if action == "DescribeVolumes" else "InvalidInstanceID"
        code += ".NotFound"
        message = f"The ID '{missing[0]}' does not exist"
        xml = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message>"
            "</Error></Errors><RequestID>unkind</RequestID></Response>"
        )
        return 400, "text/xml", xml.encode()

    def _hidden(self) -> set[str]:
        since = time.monotonic() - self.config.ec2_lag_s
        with self._lock:
            return {made for made, at in self._created.items() if at > since}


def _short_poll(body: bytes) -> bool:
    try:
        wait = json.loads(body or b"{}").get("WaitTimeSeconds", 0)
    except ValueError:  # the query protocol
        wait = dict(parse_qsl(body.decode())).get("WaitTimeSeconds", 0)
    return not int(wait)


def _error(code: str, message: str) -> Answer:
    body = {"__type": _DDB + code, "message": message}
    return 400, _JSON, json.dumps(body).encode()


def _cancelled(size: int, reason: str, rng: random.Random) -> Answer:
    reasons = [{"Code": "None"} for _ in range(max(size, 1))]
    reasons[rng.randrange(len(reasons))] = {"Code": reason, "Message": f"{reason} (unkind)"}
    codes = ", ".join(r["Code"] for r in reasons)
    body = {
        "__type": _DDB + "TransactionCanceledException",
        "Message": f"Transaction cancelled, please refer cancellation reasons for specific "
        f"reasons [{codes}]",
        "CancellationReasons": reasons,
    }
    return 400, _JSON, json.dumps(body).encode()


def _throttled(service: str) -> Answer:
    code = _THROTTLE_CODES.get(service, "ThrottlingException")
    if service in ("dynamodb", "sqs"):
        prefix = _DDB if service == "dynamodb" else ""
        return 400, _JSON, json.dumps({"__type": prefix + code, "message": "unkind"}).encode()
    if service == "s3":
        return 503, "application/xml", f"<Error><Code>{code}</Code></Error>".encode()
    xml = f"<Response><Errors><Error><Code>{code}</Code></Error></Errors></Response>"
    return 503, "text/xml", xml.encode()
