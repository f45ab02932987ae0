"""The dispatch window (docs/design.md): messages go into the priority queues only as work
can start.

Queued jobs wait in DynamoDB (a sparse index, per priority, oldest first). `fill` tops the queues
up to `dispatch_window` messages, highest effective priority first. Anyone may call it — the
submitter, every agent with free slots, the Resource Manager — so work keeps flowing while the
Resource Manager is down; a conditional mark makes sure one caller sends each job.

No starvation: a job's effective priority rises one level per `starvation_s` it has waited
(capped at the top), and its message goes to the queue of that effective priority. A job whose
message is out already rises too: once its effective priority passes the queue its message went
to, every fill sends it a new one in the higher queue (the old one turns into a stale hint), so
busy agents that never read the low queues still reach it, within about (levels to the top + 1)
x `starvation_s` under any load.

Idle agents long-poll only the lowest queue (p1, where default-priority work goes), so an idle
pool costs few requests. When a fill sends work to a higher queue it also rings a doorbell: a
wake message in p1, on which an idle agent receives from every queue.

The indexes lag the table on AWS: a submitter's own fill, right after its writes, may not find
its jobs there. So it passes them in (`fresh`); the conditional mark is the same either way.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import datetime
from typing import Any

from shared.errors import AwsError
from shared.message import JobMessage
from shared.session import Session
from shared.timeutil import parse_iso, utcnow
from shared.timings import EMPTY_SKIP_S
from shared.transitions import SENT, pending_key

log = logging.getLogger(__name__)


def effective_priority(
    priority: int, submitted_at: datetime | None, now: datetime, starvation_s: float, top: int
) -> int:
    """A job's priority raised one level per `starvation_s` of waiting, capped at `top`."""
    if submitted_at is None:
        return priority
    waited_s = max(0.0, (now - submitted_at).total_seconds())
    return min(top, priority + int(waited_s // starvation_s))


def raised_queue(item: dict[str, Any], now: datetime, starvation_s: float, top: int) -> int | None:
    """The higher queue a sent job's message belongs in by `now`, or None while the queue it
    was sent to (its effective priority when it was sent) is still its own."""
    submitted_at = parse_iso(item.get("submitted_at"))
    sent_at = parse_iso(item.get("dispatched_at"))
    if submitted_at is None or sent_at is None:
        return None
    priority = int(item["priority"])
    then = effective_priority(priority, submitted_at, sent_at, starvation_s, top)
    queue = effective_priority(priority, submitted_at, now, starvation_s, top)
    return queue if queue > then else None


class Dispatcher:
    """A long-lived dispatcher (an agent's, the Resource Manager's) remembers the priorities
    it found with nothing pending and skips them for EMPTY_SKIP_S: each ask is a query on the
    job table's index, and moto walks the whole table for one. Work submitted meanwhile is
    released by its submitter's own fill (a fresh Dispatcher), or a moment later."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._config = session.info.config
        self._empty_until: dict[int, float] = {}

    def fill(
        self,
        min_room: int = 1,
        every_priority: bool = False,
        fresh: list[dict[str, Any]] | None = None,
        *,
        clock: float | None = None,
    ) -> int:
        """Release messages for pending jobs until the window is full; returns how many.
        Does nothing while fewer than `min_room` places are free (busy agents top up in
        bulk, which keeps dispatchers from racing each other for the same jobs).
        `every_priority` asks the priorities lately found empty too (before going idle);
        `fresh` are jobs the caller has just created, which the index may not show yet.
        `clock`: the caller's monotonic time (a loop's `step(now)`), else time.monotonic()."""
        if every_priority:
            self._empty_until.clear()
        clock = time.monotonic() if clock is None else clock
        now = utcnow()
        out = list(self._session.jobs.by_dispatch(SENT))  # the window: one query, as a count
        self._raise_aged(out, now)
        in_window = len(out)
        room = self._config.dispatch_window - in_window
        if room < max(1, min_room):
            return 0
        found: dict[str, dict[str, Any]] = {item["id"]: item for item in fresh or []}
        for priority in range(1, self._config.priorities + 1):
            if self._empty_until.get(priority, 0.0) > clock:
                continue
            pending = list(self._session.jobs.by_dispatch(pending_key(priority), limit=room))
            if not pending:
                self._empty_until[priority] = clock + EMPTY_SKIP_S
            found.update((item["id"], item) for item in pending)
        candidates = [
            (self._effective(item, now), int(item.get("seq", 0)), item) for item in found.values()
        ]
        candidates.sort(key=lambda c: (-c[0], c[1]))
        chosen = candidates[:room]
        queue_of = {item["id"]: eff for eff, _, item in chosen}
        by_queue: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for item in self._session.jobs.mark_sent([item for _, _, item in chosen], at=now):
            by_queue[queue_of[item["id"]]].append(item)
        sent = 0
        for eff, items in by_queue.items():
            sent += self._send(eff, items)
        if sent and set(by_queue) != {1}:
            self._session.queues.ring()
        return sent

    def _effective(self, item: dict[str, Any], now: datetime) -> int:
        return effective_priority(
            int(item["priority"]),
            parse_iso(item.get("submitted_at")),
            now,
            self._config.starvation_s,
            self._config.priorities,
        )

    def _raise_aged(self, out: list[dict[str, Any]], now: datetime) -> None:
        """Send a new message, in its higher queue, for each sent job whose effective priority
        rose past its message's queue; whoever receives one of its messages first claims it,
        the other is dropped as stale. A conditional write makes one dispatcher do each."""
        by_queue: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for item in out:
            queue = raised_queue(item, now, self._config.starvation_s, self._config.priorities)
            if queue is not None and self._session.jobs.mark_resent(
                item["id"], item["dispatched_at"], now
            ):
                by_queue[queue].append(item)
        for queue, items in by_queue.items():
            log.info("%d waiting jobs raised to priority %d", len(items), queue)
            self._send(queue, items)

    def _send(self, priority: int, items: list[dict[str, Any]]) -> int:
        """Send the items' messages to a priority's queue; a job whose message did not go
        out is pending again (whoever fills next sends it)."""
        bodies = [
            JobMessage(
                self._session.id, item["id"], int(item["attempt"]), int(item.get("cores", 1))
            ).encode()
            for item in items
        ]
        outcome = self._session.queues.send(priority, bodies)
        for item, sent in zip(items, outcome, strict=True):
            if sent:
                continue
            try:  # each on its own: one that fails must not strand the others as sent
                self._session.jobs.mark_pending(item["id"], int(item["priority"]), None)
            except AwsError as err:  # the Resource Manager resends it after resend_s
                log.warning("job %s stays sent without a message: %s", item["id"], err)
        return sum(outcome)


def resend_sent(session: Session) -> int:
    """After the queues lost their messages (an embedded endpoint restored from its state
    keeps no message: they are hints) every sent job is pending again, and the window is
    filled anew; returns how many jobs went back to pending (one claimed meanwhile does not)."""
    again = sum(
        session.jobs.mark_pending(item["id"], int(item["priority"]), item.get("dispatched_at"))
        for item in list(session.jobs.by_dispatch(SENT))
    )
    Dispatcher(session).fill(every_priority=True)
    return again
