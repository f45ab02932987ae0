"""Trying again after contention (throttling, a transaction conflict: nothing was applied)
with jittered, growing pauses, within a time budget; never for a failed condition."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from shared.errors import Contention

T = TypeVar("T")

FIRST_S = 0.05
CAP_S = 2.0
URGENT_CAP_S = 0.25  # the lease path: its window is a part of a lease, so it asks often
WRITE_BUDGET_S = 20.0  # how long an ordinary write keeps trying through contention


def pauses(first_s: float = FIRST_S, cap_s: float = CAP_S) -> Iterator[float]:
    """Full jitter: uniform in [0, first_s * 2**n], n growing, capped at cap_s, so many
    callers that met the same contention do not come back together."""
    ceiling = first_s
    while True:
        yield random.uniform(ceiling / 2, ceiling)
        ceiling = min(cap_s, ceiling * 2)


def retried(call: Callable[[], T], budget_s: float = WRITE_BUDGET_S, cap_s: float = CAP_S) -> T:
    """`call()` (raising translated errors) until it does not meet contention; the last
    Contention is raised once the next pause would end past `budget_s`. Anything else
    (ConditionFailed included) is raised at once."""
    deadline = time.monotonic() + budget_s
    for pause in pauses(cap_s=cap_s):
        try:
            return call()
        except Contention:
            if time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
    raise AssertionError("unreachable")
