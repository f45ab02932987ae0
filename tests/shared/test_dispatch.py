"""The dispatch window's aging, on a fake clock: a sent job's message moves up a queue per
starvation_s of waiting, never down, never past the top."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from shared.dispatch import effective_priority, raised_queue
from shared.timeutil import iso

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def sent(priority: int, sent_after_s: float) -> dict[str, Any]:
    """A job submitted at T0 whose message went out `sent_after_s` later."""
    return {
        "priority": priority,
        "submitted_at": iso(T0),
        "dispatched_at": iso(T0 + timedelta(seconds=sent_after_s)),
    }


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_effective_priority_rises_a_level_per_starvation_s_up_to_the_top() -> None:
    assert [effective_priority(1, T0, at(s), 10, 3) for s in (0, 9.9, 10, 25, 1000)] == [
        1,
        1,
        2,
        3,
        3,
    ]


def test_a_sent_message_is_raised_once_its_job_outgrows_its_lane() -> None:
    item = sent(1, 0)  # sent at once, to queue p1
    assert raised_queue(item, at(9.9), 10, 3) is None
    assert raised_queue(item, at(10), 10, 3) == 2
    assert raised_queue(item, at(20), 10, 3) == 3


def test_a_message_sent_after_the_job_aged_is_in_its_lane_already() -> None:
    item = sent(1, 12)  # it went to queue p2
    assert raised_queue(item, at(19), 10, 3) is None
    assert raised_queue(item, at(20), 10, 3) == 3


def test_a_message_at_the_top_is_never_raised() -> None:
    assert raised_queue(sent(3, 0), at(1000), 10, 3) is None
    assert raised_queue(sent(1, 25), at(1000), 10, 3) is None


def test_a_job_with_no_dispatch_time_is_left_alone() -> None:
    assert raised_queue({"priority": 1, "submitted_at": iso(T0)}, at(100), 10, 3) is None
