"""One Resource Manager step, on explicit clocks, against the embedded endpoint: only the
lease holder acts, and a session whose tables are gone stops the console and headless alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.console.app import Console
from resource_manager.headless import run_headless
from resource_manager.lease import lease_line
from resource_manager.lifecycle import cleanup_session
from resource_manager.manager import Now, ResourceManager
from resource_manager.pool import Pool
from shared.errors import SessionNotFound
from shared.models import AutoscaleConfig
from shared.records import JobState
from shared.session import Session
from tests.resource_manager.test_monitor import ec2_session

GONE = "no longer exists on its endpoint"


def at(mono: float) -> Now:
    """A step at monotonic `mono`; the wall clock is the real one (VM ages, records)."""
    return Now(mono=mono, wall=time.time())


def test_a_standby_does_nothing_while_another_resource_manager_holds_the_lease(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = ec2_session(make_session, autoscale=AutoscaleConfig(enabled=True))
    pool = Pool(session)
    first = ResourceManager(pool, holder="first")
    second = ResourceManager(Pool(session), holder="second")
    assert first.step(at(0.0)) == [lease_line(session.id, None)]
    script = tmp_path / "job.sh"
    script.write_text("true\n")
    (job,) = JobClient(session).submit(JobSpec(script=str(script)))

    assert second.step(at(100.0)) == [lease_line(session.id, "first")]
    assert second.step(at(101.0)) == []
    assert second.active is False
    assert pool.vms() == [], "a standby launched a VM"
    assert second.monitor.snapshot.at == 0.0, "a standby's monitor stepped"
    assert JobClient(session).status([job])[0].state is JobState.QUEUED

    lines = first.step(at(1.0))  # the holder, given the same work, acts
    assert any(line.startswith("autoscale: launch 1 VM(s) in aws") for line in lines), lines
    assert len(pool.vms()) == 1


def test_a_standby_takes_over_once_the_lease_has_not_moved_for_a_lease_on_its_own_clock(
    make_session: Callable[..., Session],
) -> None:
    session = make_session(lease_s=6)
    first = ResourceManager(Pool(session), holder="first")
    second = ResourceManager(Pool(session), holder="second")
    first.step(at(5.0))
    # The standby's clock is its own: far from the holder's, and only its intervals count.
    assert second.step(at(1000.0)) == [lease_line(session.id, "first")]
    first.step(at(8.0))  # a renewal restarts the standby's count
    assert second.step(at(1005.0)) == []
    assert second.step(at(1010.9)) == [], "taken over before a whole lease without renewal"
    assert second.step(at(1011.0)) == [lease_line(session.id, None)]
    assert second.active is True
    assert first.step(at(9.0)) == [lease_line(session.id, "second")]
    assert first.active is False


def test_a_session_whose_tables_are_gone_stops_each_resource_manager_with_one_line(
    make_session: Callable[..., Session],
) -> None:
    session = make_session()
    active = ResourceManager(Pool(session))
    active.step(at(0.0))
    cleanup_session(session.info)

    with pytest.raises(SessionNotFound, match=GONE):
        active.step(at(1.0))
    assert active.active is False, "no lease left to give up"
    with pytest.raises(SessionNotFound, match=GONE):
        run_headless(Pool(session), interval_s=0.5)
    console = Console(Pool(session), interval_s=0.5)
    console.monitor_loop()  # returns by itself, the session being gone
    assert isinstance(console.fatal, SessionNotFound) and GONE in str(console.fatal)
    assert not any("monitor:" in line for line in console.state.copy_log(10))
