"""No starvation under load: a low-priority job starts within about (levels to the top + 1) x
starvation_s while newer high-priority work keeps every slot busy, whether its message was out
already when the flow began or not, with or without a Resource Manager."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.pool import Pool
from shared.models import LocalCloud
from shared.records import JobState
from shared.session import Session
from shared.transitions import SENT
from tests.helpers import wait_until

STARVATION_S = 4.0
BOUND_S = (3 - 1 + 1) * STARVATION_S  # priority 1 of 3: two levels to the top, plus one


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/bash\n" + body)
    return str(path)


class Feeder(threading.Thread):
    """Newer priority-3 work, faster than the VM runs it, until stopped."""

    def __init__(self, session: Session, script: str) -> None:
        super().__init__(daemon=True)
        self.client = JobClient(Session(session.info))
        self.script = script
        self.stop = threading.Event()
        self.ids: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            self.ids += self.client.submit(JobSpec(script=self.script, priority=3, count=3))
            self.stop.wait(0.5)


@pytest.mark.parametrize("with_rm", [False, True], ids=["no-rm", "rm"])
def test_a_low_job_starts_within_the_bound_under_a_saturating_flow_of_newer_high_work(
    tmp_path: Path,
    make_session: Callable[..., Session],
    resource_manager: Callable[[Session], Any],
    with_rm: bool,
) -> None:
    session = make_session(
        starvation_s=STARVATION_S,
        dispatch_window=4,  # about the VM's slots: the top lane holds ~2 s of work
        clouds=(LocalCloud(name="local", driver="local", cores_per_vm=2, max_vms=1),),
    )
    if with_rm:
        resource_manager(session)  # autoscaling is off by default: it only fills and reaps
    Pool(session).start("local", 1)
    client = JobClient(session)
    high = _script(tmp_path, "high.sh", "sleep 1\n")  # 2 a second run; 6 a second come
    blockers = client.submit(JobSpec(script=_script(tmp_path, "b.sh", "sleep 2\n"), count=2))
    wait_until(
        lambda: all(r.state is JobState.RUNNING for r in client.status(blockers)),
        timeout=60,
        what="both slots busy",
    )
    low = _script(tmp_path, "low.sh", "true\n")
    (sent_first,) = client.submit(JobSpec(script=low, priority=1))
    assert sent_first in {i["id"] for i in session.jobs.by_dispatch(SENT)}, "its message is out"
    feeder = Feeder(session, high)
    feeder.start()
    try:
        wait_until(lambda: len(feeder.ids) >= 6, timeout=30, what="the flow to run")
        (pending_first,) = client.submit(JobSpec(script=low, priority=1))
        lows = [sent_first, pending_first]
        wait_until(
            lambda: all(r.started_at for r in client.status(lows)),
            timeout=3 * BOUND_S,
            what="the low jobs to start",
        )
    finally:
        feeder.stop.set()
        feeder.join()
    rows = {r.id: r for r in client.status([*lows, *feeder.ids])}
    for job in lows:
        row = rows[job]
        assert row.started_at and row.submitted_at
        waited_s = (row.started_at - row.submitted_at).total_seconds()
        print(f"{job} waited {waited_s:.1f} s")
        assert waited_s <= BOUND_S, f"{job} waited {waited_s:.1f} s (bound {BOUND_S:.0f} s)"
        overtaken = [
            j
            for j in feeder.ids
            if (rows[j].submitted_at or row.submitted_at) > row.submitted_at
            and (rows[j].started_at or row.started_at) < row.started_at
        ]
        assert overtaken, "the flow kept the VM busy: newer high work started first"
