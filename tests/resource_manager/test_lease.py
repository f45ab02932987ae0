"""One active Resource Manager per session: a second one waits as a standby and takes over
when the active one dies."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.lease import NAME
from shared.events import SESSION_KEY
from shared.models import AutoscaleConfig, LocalCloud
from shared.records import JobState
from shared.session import Session
from tests.helpers import wait_until


def holder(session: Session) -> str:
    lease = session.vms.read_lease(NAME)
    return lease[0] if lease else ""


def launches(session: Session) -> list[str]:
    events = session.events.for_job(SESSION_KEY)
    return [
        e.detail or "" for e in events if e.kind == "autoscale" and "launch" in (e.detail or "")
    ]


def test_a_standby_takes_over_when_the_active_resource_manager_is_killed(
    tmp_path: Path, make_session: Callable[..., Session], resource_manager: Callable[[Session], Any]
) -> None:
    session = make_session(
        clouds=(LocalCloud(name="local", driver="local", cores_per_vm=2, max_vms=2),),
        autoscale=AutoscaleConfig(enabled=True, idle_timeout_s=600, step_s=0.5),
    )
    first = resource_manager(session)
    wait_until(lambda: f"pid {first.pid}" in holder(session), what="the first to hold the lease")
    second = resource_manager(session)
    script = tmp_path / "job.sh"
    script.write_text("sleep 0.5\n")
    client = JobClient(session)
    ids = client.submit(JobSpec(script=str(script), count=20))
    wait_until(lambda: sum(r.state.terminal for r in client.status(ids)) >= 4, timeout=60)
    assert f"pid {first.pid}" in holder(session), "the standby never took over a live one"
    first.send_signal(signal.SIGKILL)
    began = time.monotonic()
    wait_until(
        lambda: f"pid {second.pid}" in holder(session),
        timeout=30,
        what="the standby to take over",
    )
    assert time.monotonic() - began < session.info.config.lease_s * 2 + 2
    more = client.submit(JobSpec(script=str(script), count=10))
    rows = client.wait(ids + more, timeout=120)
    assert all(r.state is JobState.SUCCEEDED for r in rows)
    assert len(session.vms.all()) == 2 and len(launches(session)) == 1, launches(session)
    assert second.poll() is None, "the new active Resource Manager runs on"
