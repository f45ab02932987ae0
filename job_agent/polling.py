"""Where an agent's next messages come from: the lanes highest first, an empty lane left alone
for a moment, the dispatch window topped up when short of work, one long poll while idle."""

from __future__ import annotations

import time
from dataclasses import dataclass

from shared.dispatch import Dispatcher
from shared.queues import Received
from shared.session import Session

IDLE_SWEEP_S = 60  # an idle agent long-polls the lowest lane only, sweeping all this often
FILL_EVERY_S = 0.5  # how often a busy agent may top up the dispatch window
LANE_SKIP_S = 1.0  # an empty lane is not polled again this soon (bounds priority delay)


@dataclass(frozen=True)
class Batch:
    messages: list[Received]
    woke: bool  # work found after none was: whether to drain is read afresh before claiming


class Polling:
    def __init__(self, session: Session, idle_wait_s: int) -> None:
        self.queues = session.queues
        self.dispatcher = Dispatcher(session)
        self.idle_wait_s = idle_wait_s
        self.window = session.info.config.dispatch_window
        priorities = session.info.config.priorities
        self.lanes = [session.info.queue_url(p) for p in range(priorities, 0, -1)]
        self._idle_until = 0.0  # monotonic: while idle, long-poll the lowest lane only
        self._empty_until: dict[str, float] = {}  # lane -> monotonic time to poll it again
        self._last_fill = 0.0

    def next_messages(self, free: int) -> Batch | None:
        """Up to `free` messages, or None when there is no work now. Blocks up to
        `idle_wait_s` when idle; raises AwsError."""
        if time.monotonic() < self._idle_until:
            return self._long_poll(free)
        return self._sweep_and_fill(free)

    def sweep_all(self) -> None:
        """Poll every lane next time, even those just found empty (a wake-up arrived)."""
        self._empty_until.clear()

    def _long_poll(self, free: int) -> Batch | None:
        self.queues.flush(now=True)  # nothing to delete waits out the poll
        messages = self.queues.receive(self.lanes[-1], free, self.idle_wait_s)
        if not messages:
            return None
        self._idle_until = 0.0
        return Batch(messages, woke=True)

    def _sweep_and_fill(self, free: int) -> Batch | None:
        messages = self._sweep(free)
        woke = False
        # Short of work: top up the dispatch window, at once before going idle (with the
        # Resource Manager down, nobody else might), then look again.
        if len(messages) < free and self._fill(force=not messages):
            self.sweep_all()
            woke = not messages
            messages += self._sweep(free - len(messages))
        if not messages:
            self._idle_until = time.monotonic() + IDLE_SWEEP_S
            return None
        return Batch(messages, woke)

    def _sweep(self, free: int) -> list[Received]:
        """Receive from the lanes, highest first. A lane found empty is skipped for
        LANE_SKIP_S, so a session that uses one lane pays one request per receive."""
        got: list[Received] = []
        now = time.monotonic()
        for lane in self.lanes:
            if len(got) >= free:
                break
            if self._empty_until.get(lane, 0.0) > now:
                continue
            received = self.queues.receive(lane, free - len(got), 0)
            if not received:
                self._empty_until[lane] = now + LANE_SKIP_S
            got.extend(received)
        return got

    def _fill(self, force: bool = False) -> bool:
        """Top up the dispatch window: a busy agent at most every FILL_EVERY_S and in bulk,
        one about to go idle now and with whatever room there is. True if it sent any."""
        now = time.monotonic()
        if not force and now - self._last_fill < FILL_EVERY_S:
            return False
        self._last_fill = now
        room = 1 if force else self.window // 2
        return self.dispatcher.fill(min_room=room, every_priority=force) > 0
