"""Soft and hard kill, the reaper, and a Resource Manager restarted mid-run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.pool import Pool
from shared.records import JobState, VmState
from shared.session import Session
from tests.helpers import cli, stop_process, wait_until


def script(tmp_path: Path, body: str, name: str = "job.sh") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/bash\nset -e\n" + body)
    return str(path)


def running_on(client: JobClient, job_id: str) -> str | None:
    row = client.status([job_id])[0]
    return row.vm if row.state is JobState.RUNNING else None


def vm_state(session: Session, vm_id: str) -> VmState | None:
    record = session.vms.get(vm_id)
    return record.state if record else None


def test_drained_vm_finishes_its_job_takes_no_new_one_and_stops(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    pool = Pool(session)
    client = JobClient(session)
    (vm,) = pool.start("local", 1)
    long_job = client.submit(JobSpec(script=script(tmp_path, "sleep 6\necho finished\n")))[0]
    wait_until(lambda: running_on(client, long_job), timeout=30, what="the job to start")
    assert pool.drain([vm]) == [vm]
    assert vm_state(session, vm) is VmState.DRAINING
    # Agents see a drain with their next heartbeat (README, heartbeat_s): from then on.
    asked = session.vms.get(vm)
    assert asked is not None
    wait_until(
        lambda: (r := session.vms.get(vm)) and r.last_heartbeat_at != asked.last_heartbeat_at,
        timeout=10,
        what="a heartbeat after the drain",
    )
    later = client.submit(JobSpec(script=script(tmp_path, "true\n", "later.sh")))[0]
    wait_until(
        lambda: vm_state(session, vm) is VmState.STOPPED, timeout=60, what="the drained VM to stop"
    )
    assert client.status([long_job])[0].state is JobState.SUCCEEDED
    assert client.logs(long_job)["stdout"] == "finished\n"
    assert client.status([later])[0].state is JobState.QUEUED, "a draining VM takes no new job"
    wait_until(
        lambda: not any(i.alive for i in pool.driver("local").instances()),
        timeout=10,
        what="the agent process to exit",
    )


def test_hard_killed_vm_has_its_job_retried_elsewhere_once(
    tmp_path: Path, make_session: Callable[..., Session], resource_manager: Callable[[Session], Any]
) -> None:
    session = make_session()
    resource_manager(session)
    pool = Pool(session)
    client = JobClient(session)
    (first,) = pool.start("local", 1)
    job = client.submit(
        JobSpec(
            script=script(tmp_path, 'sleep 2\necho "ran on attempt $CLOBI_ATTEMPT" > out.txt\n'),
            outputs=("out.txt",),
        )
    )[0]
    wait_until(lambda: running_on(client, job) == first, timeout=30, what="the job to start")
    (second,) = pool.start("local", 1)
    assert pool.kill([first]) == [first]
    assert not any(i.alive and i.vm_id == first for i in pool.driver("local").instances())
    rows = client.wait([job], timeout=60)
    assert rows[0].state is JobState.SUCCEEDED
    assert (rows[0].attempt, rows[0].vm) == (2, second)
    kinds = [e.kind for e in client.events([job])]
    assert kinds.count("succeeded") == 1 and "lost" in kinds
    out = client.fetch([job], tmp_path / "results")[0]
    assert (out / "out.txt").read_text() == "ran on attempt 2\n"


def test_restarting_the_resource_manager_loses_and_duplicates_nothing(
    tmp_path: Path, make_session: Callable[..., Session], resource_manager: Callable[[Session], Any]
) -> None:
    session = make_session()
    pool = Pool(session)
    client = JobClient(session)
    rm = resource_manager(session)
    pool.start("local", 2)
    ids = client.submit(
        JobSpec(script=script(tmp_path, "sleep 0.3\necho $CLOBI_JOB_ID\n"), count=30)
    )
    wait_until(
        lambda: sum(r.state.terminal for r in client.status(ids)) >= 5,
        timeout=60,
        what="a few jobs to finish",
    )
    stop_process(rm)
    resource_manager(session)
    rows = client.wait(ids, timeout=120)
    assert all(r.state is JobState.SUCCEEDED and r.attempt == 1 for r in rows)
    events = client.events(ids)
    assert sum(e.kind == "succeeded" for e in events) == 30
    assert sum(e.kind == "started" for e in events) == 30


def test_vm_kill_requeues_its_running_job_at_once_without_a_resource_manager(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session(lease_s=600, heartbeat_s=0.5)  # a lease nobody would wait out
    pool = Pool(session)
    client = JobClient(session)
    (first,) = pool.start("local", 1)
    job = client.submit(JobSpec(script=script(tmp_path, "sleep 1000\n")))[0]
    wait_until(lambda: running_on(client, job) == first, timeout=30, what="the job to start")
    result = cli("vm", "kill", first, "--session", session.id)
    assert result.code == 0, result.err
    row = client.status([job])[0]
    assert (row.state, row.attempt, row.reason) == (JobState.QUEUED, 1, "lost_vm")
    assert [e.kind for e in client.events([job])][-1] == "lost"
    (second,) = pool.start("local", 1)
    wait_until(lambda: running_on(client, job) == second, timeout=30, what="the retry to start")
    assert client.status([job])[0].attempt == 2


def test_vm_kill_fails_a_job_out_of_attempts_with_lost_vm(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session(lease_s=600, max_attempts=1)
    pool = Pool(session)
    client = JobClient(session)
    (vm,) = pool.start("local", 1)
    job = client.submit(JobSpec(script=script(tmp_path, "sleep 1000\n")))[0]
    wait_until(lambda: running_on(client, job) == vm, timeout=30, what="the job to start")
    assert pool.kill([vm]) == [vm]
    row = client.status([job])[0]
    assert (row.state, row.reason) == (JobState.FAILED, "lost_vm")
