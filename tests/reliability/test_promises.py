"""Promises the README makes about the pool and the jobs, each shown end to end: orphan VMs
are terminated, a silent VM is failed and its jobs retried, a lost message is sent again,
logs are cut at max_log_bytes, and a snapshot-only release fails on a local VM."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.drivers.local import LocalDriver
from resource_manager.pool import Pool
from shared import naming
from shared.models import Bootstrap, ReleaseConfig
from shared.records import JobState, VmState
from shared.session import Session
from tests.faults.invariants import assert_invariants
from tests.helpers import wait_until


def _script(tmp_path: Path, body: str, name: str = "job.sh") -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


def test_a_vm_of_the_session_the_registry_does_not_know_is_terminated(
    make_session: Callable[..., Session], resource_manager: Callable[[Session], Any]
) -> None:
    session = make_session()
    cloud = session.info.config.clouds[0]
    driver = LocalDriver(session.info, cloud)
    orphan = naming.new_vm_id(cloud.name)  # started behind the registry's back
    driver.launch(Bootstrap(vm_id=orphan, cloud=cloud.name, cores=2, session=session.info))
    pid = driver.agent_pid(orphan)
    assert pid is not None
    # Its agent never comes up (a broken image, say), so it never registers itself either.
    os.kill(pid, signal.SIGSTOP)
    resource_manager(session)
    wait_until(lambda: driver.agent_pid(orphan) is None, 30, what="the orphan to be terminated")
    assert not Path(f"/proc/{pid}").exists() or " Z " in Path(f"/proc/{pid}/stat").read_text()


def test_a_vm_that_stops_heartbeating_is_failed_and_its_job_retried(
    tmp_path: Path, make_session: Callable[..., Session], resource_manager: Callable[..., Any]
) -> None:
    session = make_session(lease_s=4, heartbeat_s=0.5, vm_timeout_s=3)
    pool, client = Pool(session), JobClient(session)
    (frozen,) = pool.start("local", 1)
    (job,) = client.submit(JobSpec(script=_script(tmp_path, "sleep 2\necho done\n")))
    wait_until(lambda: client.status([job])[0].state is JobState.RUNNING, 30, what="running")
    pid = LocalDriver(session.info, session.info.config.clouds[0]).agent_pid(frozen)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # silent from now on
    try:
        resource_manager(session)
        wait_until(
            lambda: next(v for v in pool.vms() if v.id == frozen).state is VmState.FAILED,
            30,
            what="the silent VM to be marked failed",
        )
        (healthy,) = pool.start("local", 1)
        (row,) = client.wait([job], timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):  # terminated with its VM, as it should
            os.kill(pid, signal.SIGCONT)
    assert (row.state, row.attempt, row.vm) == (JobState.SUCCEEDED, 2, healthy)
    assert_invariants(session)


def test_a_lost_message_is_sent_again(
    tmp_path: Path, make_session: Callable[..., Session], resource_manager: Callable[..., Any]
) -> None:
    session = make_session(resend_s=2)
    client = JobClient(session)
    (job,) = client.submit(JobSpec(script=_script(tmp_path, "echo found\n")))
    queue = session.info.queue_url(1)
    got = session.aws.sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=2)["Messages"]
    session.aws.sqs.delete_message(QueueUrl=queue, ReceiptHandle=got[0]["ReceiptHandle"])
    Pool(session).start("local", 1)
    resource_manager(session)  # no other part sends a message that was sent already
    (row,) = client.wait([job], timeout=60)
    assert row.state is JobState.SUCCEEDED and client.logs(job)["stdout"] == "found\n"


def test_stdout_is_cut_at_max_log_bytes_with_a_note(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session(max_log_bytes=4096)
    Pool(session).start("local", 1)
    client = JobClient(session)
    (job,) = client.submit(
        JobSpec(script=_script(tmp_path, "head -c 100000 /dev/zero | tr '\\0' x\n"))
    )
    (row,) = client.wait([job], timeout=60)
    assert row.state is JobState.SUCCEEDED
    out = client.logs(job)["stdout"]
    assert out.startswith("x" * 4096) and "truncated at 4096 bytes" in out and len(out) < 4200


def test_a_snapshot_only_release_fails_on_a_local_vm_with_release_error(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session(
        releases={"ebs-only": ReleaseConfig(snapshot="snap-0123456789abcdef0")}, max_attempts=1
    )
    Pool(session).start("local", 1)
    client = JobClient(session)
    (job,) = client.submit(JobSpec(script=_script(tmp_path, "true\n"), release="ebs-only"))
    (row,) = client.wait([job], timeout=60)
    assert (row.state, row.reason) == (JobState.FAILED, "release_error")
    errors = [e.detail or "" for e in client.events([job]) if e.kind == "error"]
    assert any("EC2 VMs only" in detail for detail in errors), errors


def test_a_vm_marked_failed_that_still_runs_is_terminated(
    make_session: Callable[..., Session], resource_manager: Callable[..., Any]
) -> None:
    """A terminate that failed, or a power-off that did not happen, leaves a VM running
    (and billing, and taking jobs) under a record that says it is not: the monitor ends it."""
    session = make_session()
    pool = Pool(session)
    (vm,) = pool.start("local", 1)
    driver = LocalDriver(session.info, session.info.config.clouds[0])
    wait_until(lambda: next(v for v in pool.vms() if v.id == vm).state is VmState.RUNNING, 30)
    assert session.vms.set_state(vm, VmState.FAILED)
    assert driver.agent_pid(vm) is not None
    resource_manager(session)
    wait_until(lambda: driver.agent_pid(vm) is None, 30, what="the failed VM to be terminated")
