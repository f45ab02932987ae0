"""The embedded endpoint as a user runs it (`clobi local up`), killed with -9 while jobs run,
and a whole machine's reboot: nothing acknowledged is lost, every job ends `succeeded` once,
and a session's dead local VMs are failed and their jobs run again on new ones."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from embedded import daemon
from job_agent.runner import job_processes
from resource_manager.drivers.local import LocalDriver
from shared import sessionfile
from shared.aws import from_item
from shared.models import LocalCloud
from shared.session import Session
from tests.faults.invariants import assert_invariants
from tests.helpers import cli, clobi_process, session_from_cli, stop_process, wait_until

CONFIG = """name = "durable"
endpoint_url = "local"
heartbeat_s = 0.5
lease_s = 8
vm_timeout_s = 10
register_timeout_s = 30

[autoscale]
enabled = false

[[clouds]]
name = "local"
driver = "local"
cores_per_vm = 2
max_vms = 4
"""


def start_session(tmp_path: Path) -> Session:
    return Session(sessionfile.resolve(session_from_cli(tmp_path, CONFIG)))


def submit(tmp_path: Path, session: Session, count: int, body: str) -> list[str]:
    script = tmp_path / "job.sh"
    script.write_text(f'#!/bin/bash\n{body}\necho "$CLOBI_JOB_ID" > out.txt\n')
    args = ("--script", str(script), "--count", str(count), "--output", "out.txt")
    submitted = cli("submit", *args, "--session", session.id)
    assert submitted.code == 0, submitted.err
    return submitted.out.split()


def jobs_in(session: Session, state: str) -> dict[str, dict[str, Any]]:
    found = {}
    for page in session.aws.ddb.get_paginator("scan").paginate(
        TableName=session.info.tables["jobs"]
    ):
        for raw in page["Items"]:
            item = from_item(raw)
            if item["state"] == state:
                found[item["id"]] = item
    return found


def kill_endpoint() -> None:
    pid = daemon.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not daemon.is_alive(pid), timeout=10, what="the endpoint to die")


def check_every_job_succeeded_once(session: Session, jobs: list[str], results: Path) -> None:
    succeeded = jobs_in(session, "succeeded")
    assert sorted(succeeded) == sorted(jobs)
    for job in jobs:
        kinds = [event.kind for event in session.events.for_job(job)]
        assert kinds.count("succeeded") == 1, (job, kinds)
    fetched = cli("fetch", "-o", str(results), "--session", session.id)
    assert fetched.code == 0, fetched.err
    outs = {p.parent.name: p.read_text().strip() for p in results.glob("*/out.txt")}
    assert outs == {job: job for job in jobs}
    assert_invariants(session)


@pytest.mark.parametrize(
    "count", [100, pytest.param(500, marks=pytest.mark.slow)], ids=["100", "500"]
)
def test_a_kill_9_of_the_endpoint_while_jobs_run_loses_nothing(
    tmp_path: Path, local_daemon: str, count: int
) -> None:
    session = start_session(tmp_path)
    assert cli("vm", "start", "local", "-n", "2", "--session", session.id).code == 0
    jobs = submit(tmp_path, session, count, "sleep 0.2")
    finished = wait_until(
        lambda: len(done := jobs_in(session, "succeeded")) >= count // 5 and done,
        timeout=120,
        what="a fifth of the jobs to succeed",
    )
    kill_endpoint()
    assert cli("local", "up").code == 0  # on the port the session knows
    waited = cli("wait", "--timeout", str(60 + count), "--session", session.id)
    assert waited.code == 0, waited.err
    after = jobs_in(session, "succeeded")
    assert {job: after[job] for job in finished} == finished  # finished records unchanged
    check_every_job_succeeded_once(session, jobs, tmp_path / "results")


def test_after_a_reboot_the_session_resumes_and_dead_vms_jobs_run_on_new_vms(
    tmp_path: Path, local_daemon: str
) -> None:
    session = start_session(tmp_path)
    rm = clobi_process("rm", "--headless", "--interval", "0.5", "--session", session.id)
    try:
        started = cli("vm", "start", "local", "-n", "2", "--session", session.id)
        assert started.code == 0, started.err
        old_vms = set(started.out.split())
        # Four jobs fill both VMs' slots; the first attempt runs until the machine goes.
        jobs = submit(tmp_path, session, 4, '[ "$CLOBI_ATTEMPT" -gt 1 ] || sleep 600')
        wait_until(
            lambda: all(job_processes(job) for job in jobs),
            timeout=60,
            what="four jobs to run",
        )
        running = jobs_in(session, "running")
        reboot(session, rm)
        assert cli("local", "up").code == 0
        rm = clobi_process("rm", "--headless", "--interval", "0.5", "--session", session.id)
        wait_until(
            lambda: all(vm_state(session, vm) == "failed" for vm in old_vms),
            timeout=60,
            what="the dead VMs to be marked failed",
        )
        wait_until(
            lambda: not jobs_in(session, "running"), timeout=30, what="their jobs to be requeued"
        )
        started = cli("vm", "start", "local", "-n", "2", "--session", session.id)
        assert started.code == 0, started.err
        new_vms = set(started.out.split())
        waited = cli("wait", "--timeout", "120", "--session", session.id)
        assert waited.code == 0, waited.err
    finally:
        stop_process(rm)
    done = jobs_in(session, "succeeded")
    assert sorted(running) == sorted(jobs)
    for job in jobs:
        assert done[job]["vm"] in new_vms and done[job]["attempt"] == 2, done[job]
    check_every_job_succeeded_once(session, jobs, tmp_path / "results")


def vm_state(session: Session, vm: str) -> str | None:
    record = session.vms.get(vm)
    return None if record is None else record.state.value


def reboot(session: Session, rm: Any) -> None:
    """Every clobi process of this machine dies at once: the endpoint, the Resource Manager,
    the agents and their jobs (as a power cut would)."""
    rm.kill()
    rm.wait(10)
    cloud = session.info.config.clouds[0]
    assert isinstance(cloud, LocalCloud)
    driver = LocalDriver(session.info, cloud)
    victims = []
    for vm in session.vms.all():
        agent = driver.agent_pid(vm.id)
        if agent is not None:
            victims += [pid for pid in _pids() if _session_of(pid) == agent]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    kill_endpoint()


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _session_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None
