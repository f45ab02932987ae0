"""Where an agent's next messages come from: the queues highest priority first, an empty queue
left alone for a moment, the dispatch window topped up when short of work, and while idle one
long poll of the lowest queue (with every queue looked at again now and then)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from shared.dispatch import Dispatcher
from shared.queues import Received
from shared.session import Session
from shared.timings import FILL_EVERY_S, IDLE_ROUND_S, LAST_LOOK_WAIT_S, QUEUE_SKIP_S


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
        self.urls = [session.info.queue_url(p) for p in range(priorities, 0, -1)]
        self._idle_until = 0.0  # monotonic: while idle, long-poll the lowest queue only
        self._empty_until: dict[str, float] = {}  # queue URL -> monotonic time to ask again
        self._last_fill = 0.0

    def next_messages(self, free: int, busy: bool = False) -> Batch | None:
        """Up to `free` messages, or None when there is no work now. Blocks up to
        `idle_wait_s` when idle; raises AwsError. `busy`: some job runs here (no last look
        before idling: its waits would hold up a busy agent's next round)."""
        if time.monotonic() < self._idle_until:
            return self._long_poll(free)
        return self._round_and_fill(free, busy)

    def every_queue_next(self) -> None:
        """Receive from every queue next time, even those just found empty (a wake-up)."""
        self._empty_until.clear()

    def _long_poll(self, free: int) -> Batch | None:
        self.queues.flush(now=True)  # nothing to delete waits out the poll
        messages = self.queues.receive(self.urls[-1], free, self.idle_wait_s)
        if not messages:
            return None
        self._idle_until = 0.0
        return Batch(messages, woke=True)

    def _round_and_fill(self, free: int, busy: bool) -> Batch | None:
        messages = self._round(free)
        woke = False
        # Short of work: top up the dispatch window, at once before going idle (with the
        # Resource Manager down, nobody else might), then look again.
        if len(messages) < free and self._fill(force=not messages):
            self.every_queue_next()
            woke = not messages
            messages += self._round(free - len(messages))
        if not messages and not busy:  # a last look that asks every server before idling
            self.queues.flush(now=True)  # nothing to delete waits out its waits
            self.every_queue_next()
            messages = self._round(free, wait_s=LAST_LOOK_WAIT_S)
            woke = bool(messages)
        if not messages:
            self._idle_until = time.monotonic() + IDLE_ROUND_S
            return None
        return Batch(messages, woke)

    def _round(self, free: int, wait_s: int = 0) -> list[Received]:
        """Receive from the queues, highest priority first. A queue found empty is left
        alone for QUEUE_SKIP_S, so a session that uses one queue pays one request a
        receive."""
        got: list[Received] = []
        now = time.monotonic()
        for url in self.urls:
            if len(got) >= free:
                break
            if self._empty_until.get(url, 0.0) > now:
                continue
            received = self.queues.receive(url, free - len(got), wait_s)
            if not received:
                self._empty_until[url] = now + QUEUE_SKIP_S
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
