"""Faults injected into real processes and a real moto server, each test ending with the
invariant check (tests/faults/invariants.py): nothing lost, nothing run twice.

The session's components (agents, `clobi rm --headless`, the client) talk to moto through a
fault proxy; the checks talk to moto directly.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from job_agent.runner import job_processes
from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.pool import Pool
from shared.message import JobMessage
from shared.records import JobState
from shared.session import Session
from tests.faults import processes
from tests.faults.invariants import assert_invariants
from tests.faults.proxy import FaultProxy, operation
from tests.faults.state import lose_state
from tests.helpers import cli, requires_tool, wait_until

LEASE = {"lease_s": 4, "heartbeat_s": 0.5}


def script(tmp_path: Path, body: str, name: str = "job.sh") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/bash\n" + body)
    return str(path)


def running(direct: Session, job: str) -> bool:
    return direct.jobs.get(job)["state"] == "running"


def test_agent_killed_between_claim_and_message_delete(
    tmp_path: Path,
    proxy: FaultProxy,
    faulty: Callable[..., tuple[Session, Session]],
    resource_manager: Callable[[Session], Any],
) -> None:
    session, direct = faulty(**LEASE)
    resource_manager(session)
    pool = Pool(session)
    (vm,) = pool.start("local", 1)
    pid = processes.agent_pid(session, vm)
    proxy.add(
        "blackhole",
        operation("sqs.DeleteMessage", component="agent"),
        times=1,
        on_match=lambda _: processes.kill(pid),
    )
    job = JobClient(session).submit(JobSpec(script=script(tmp_path, "sleep 1\n")))[0]
    wait_until(lambda: proxy.rules[0].fired, timeout=30, what="the claim, then the delete")
    assert direct.jobs.get(job)["vm"] == vm  # claimed, message still in the queue
    proxy.clear()
    (survivor,) = pool.start("local", 1)
    row = JobClient(direct).wait([job], timeout=60)[0]
    assert (row.state, row.attempt, row.vm) == (JobState.SUCCEEDED, 2, survivor)
    kinds = [(e.kind, e.attempt) for e in direct.events.for_job(job)]
    assert ("lost", 1) in kinds and ("succeeded", 2) in kinds
    assert_invariants(direct)


def test_a_lost_claim_response_still_runs_the_job_once(
    tmp_path: Path, proxy: FaultProxy, faulty: Callable[..., tuple[Session, Session]]
) -> None:
    session, direct = faulty()
    claims = proxy.add(
        "drop_response",
        operation("dynamodb.UpdateItem", body=b":queued", component="agent"),
        times=1,
    )
    Pool(session).start("local", 1)
    job = JobClient(session).submit(JobSpec(script=script(tmp_path, "echo once >> out\n")))[0]
    row = JobClient(direct).wait([job], timeout=60)[0]
    assert claims.fired == 1
    assert (row.state, row.attempt) == (JobState.SUCCEEDED, 1)  # its own claim, recognised
    assert_invariants(direct)


def test_a_lost_completion_response_records_one_result(
    tmp_path: Path, proxy: FaultProxy, faulty: Callable[..., tuple[Session, Session]]
) -> None:
    session, direct = faulty()
    completions = proxy.add(
        "drop_response",
        operation("dynamodb.TransactWriteItems", body=b'"succeeded"', component="agent"),
        times=1,
    )
    Pool(session).start("local", 1)
    client = JobClient(session)
    jobs = client.submit(JobSpec(script=script(tmp_path, "echo $CLOBI_JOB_ID\n"), count=3))
    rows = JobClient(direct).wait(jobs, timeout=60)
    assert completions.fired == 1
    assert all((r.state, r.attempt) == (JobState.SUCCEEDED, 1) for r in rows)
    assert_invariants(direct)


def test_the_endpoint_unreachable_for_longer_than_a_lease_then_back(
    tmp_path: Path,
    proxy: FaultProxy,
    faulty: Callable[..., tuple[Session, Session]],
    resource_manager: Callable[[Session], Any],
) -> None:
    session, direct = faulty(**LEASE)
    resource_manager(session)
    Pool(session).start("local", 1)
    body = 'sleep 3\necho "attempt $CLOBI_ATTEMPT" > out.txt\n'
    job = JobClient(session).submit(JobSpec(script=script(tmp_path, body), outputs=("out.txt",)))
    wait_until(lambda: job_processes(job[0], attempt=1), timeout=30, what="attempt 1 to run")
    proxy.add("blackhole")  # everything: agents and Resource Manager
    wait_until(
        lambda: not job_processes(job[0], attempt=1),
        timeout=LEASE["lease_s"] + 5,
        what="the cut-off agent to kill its job (self-fencing)",
    )
    time.sleep(LEASE["lease_s"])  # the outage lasts well past a lease
    proxy.clear()
    row = JobClient(direct).wait(job, timeout=90)[0]
    assert (row.state, row.attempt) == (JobState.SUCCEEDED, 2)
    out = JobClient(direct).fetch(job, tmp_path / "results")[0]
    assert (out / "out.txt").read_text() == "attempt 2\n"
    assert_invariants(direct)


def test_throttling_slows_work_down_but_loses_nothing(
    tmp_path: Path,
    proxy: FaultProxy,
    faulty: Callable[..., tuple[Session, Session]],
    resource_manager: Callable[[Session], Any],
) -> None:
    session, direct = faulty(**LEASE)
    resource_manager(session)
    throttled = proxy.add("throttle", every=3)  # one request in three, every service
    Pool(session).start("local", 2)
    jobs = JobClient(session).submit(JobSpec(script=script(tmp_path, "echo hi\n"), count=10))
    rows = JobClient(direct).wait(jobs, timeout=120)
    assert throttled.fired > 10
    assert [r.state for r in rows] == [JobState.SUCCEEDED] * 10
    assert_invariants(direct)


def test_stale_future_and_duplicate_messages_do_not_run_a_job_again(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    Pool(session).start("local", 1)
    client = JobClient(session)
    job = client.submit(JobSpec(script=script(tmp_path, "echo once\n")))[0]
    client.wait([job], timeout=60)
    before = session.events.for_job(job)
    url = session.info.queue_url(1)
    for attempt in (0, 0, 1, 7):  # the original twice, then out of order
        session.aws.sqs.send_message(
            QueueUrl=url, MessageBody=JobMessage(session.id, job, attempt).encode()
        )
    marker = client.submit(JobSpec(script=script(tmp_path, "true\n", "marker.sh")))[0]
    client.wait([marker], timeout=60)  # the agent has been through the queue since
    wait_until(lambda: not _visible(session, url), timeout=30, what="the messages to be dropped")
    assert session.events.for_job(job) == before
    assert_invariants(session)


def _visible(session: Session, url: str) -> int:
    attrs = session.aws.sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


def test_a_job_that_double_forks_a_daemon_leaves_no_process(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    Pool(session).start("local", 1)
    client = JobClient(session)
    body = "(setsid sleep 1000 > /dev/null 2>&1 < /dev/null &) \necho daemonized\n"
    job = client.submit(JobSpec(script=script(tmp_path, body)))[0]
    assert client.wait([job], timeout=60)[0].state is JobState.SUCCEEDED
    assert_invariants(session)  # includes: no process of a finished job remains


def test_binary_and_non_utf8_output_is_kept_and_shown(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    Pool(session).start("local", 1)
    client = JobClient(session)
    body = "printf 'caf\\xe9 \\xff\\xfe\\x00 end\\n'\nhead -c 3000 /dev/urandom >&2\n"
    job = client.submit(JobSpec(script=script(tmp_path, body)))[0]
    assert client.wait([job], timeout=60)[0].state is JobState.SUCCEEDED
    assert client.logs(job)["stdout"].startswith("caf\ufffd \ufffd\ufffd")
    out = client.fetch([job], tmp_path / "results")[0]
    assert (out / "stdout").read_bytes() == b"caf\xe9 \xff\xfe\x00 end\n"
    assert len((out / "stderr").read_bytes()) == 3000
    assert_invariants(session)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_job_filling_the_disk_fails_alone_and_the_agent_goes_on(
    tmp_path: Path, make_session: Callable[..., Session], clobi_home: Path
) -> None:
    session = make_session(max_attempts=1)
    with processes.tmpfs(clobi_home / "vms" / session.id, size="16m"), _stopped(session):
        Pool(session).start("local", 1)
        client = JobClient(session)
        filler = "dd if=/dev/zero of=big bs=1M count=64 2>/dev/null\necho filled\n"
        (full,) = client.submit(JobSpec(script=script(tmp_path, filler), outputs=("big",)))
        row = client.wait([full], timeout=60)[0]
        assert (row.state, row.reason) == (JobState.FAILED, "output_error")
        errors = [e.detail or "" for e in client.events([full]) if e.kind == "error"]
        assert any("No space left on device" in detail for detail in errors), errors
        (after,) = client.submit(JobSpec(script=script(tmp_path, "echo fine\n", "after.sh")))
        assert client.wait([after], timeout=60)[0].state is JobState.SUCCEEDED
    assert_invariants(session)


@contextmanager
def _stopped(session: Session) -> Iterator[None]:
    """The session's VMs stopped on the way out (before their tmpfs goes, with their pids)."""
    try:
        yield
    finally:
        Pool(session).terminate_all()


LIBFAKETIME = next(
    (
        str(p)
        for p in Path("/usr/lib").glob("*/faketime/libfaketime.so.1")
        if shutil.which("faketime")
    ),
    None,
)


@requires_tool("faketime")
def test_an_agent_an_hour_ahead_is_reaped_on_time_and_its_jobs_are_not_lost(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_session: Callable[..., Session],
    resource_manager: Callable[[Session], Any],
) -> None:
    assert LIBFAKETIME, "faketime is installed but its library was not found"
    session = make_session(**LEASE)
    resource_manager(session)
    monkeypatch.setenv("LD_PRELOAD", LIBFAKETIME)
    monkeypatch.setenv("FAKETIME", "+1h")
    # The wall clock only: skew is about clocks that disagree, and Python's waits on a faked
    # monotonic clock hang under libfaketime.
    monkeypatch.setenv("FAKETIME_DONT_FAKE_MONOTONIC", "1")
    skewed = Pool(session).start("local", 1)[0]  # its agent (and jobs) live an hour ahead
    monkeypatch.delenv("LD_PRELOAD")
    monkeypatch.delenv("FAKETIME")
    monkeypatch.delenv("FAKETIME_DONT_FAKE_MONOTONIC")
    client = JobClient(session)
    jobs = client.submit(JobSpec(script=script(tmp_path, "sleep 2\n"), count=2))
    rows = client.wait(jobs, timeout=60)
    assert [r.vm for r in rows] == [skewed, skewed]
    assert {r.state for r in rows} == {JobState.SUCCEEDED}
    started = [e.at for e in client.events(jobs) if e.kind == "started"]
    assert started and min(started).timestamp() > time.time() + 3000  # the skew took hold
    (late,) = client.submit(JobSpec(script=script(tmp_path, "sleep 30\n", "late.sh")))
    wait_until(lambda: job_processes(late), timeout=30, what="the job on the skewed agent")
    began = time.monotonic()
    processes.kill(processes.agent_pid(session, skewed))
    wait_until(
        lambda: client.status([late])[0].state is JobState.QUEUED,
        timeout=LEASE["lease_s"] * 3,
        what="the reaper to take back the skewed agent's job",
    )
    assert time.monotonic() - began < LEASE["lease_s"] * 3
    Pool(session).terminate_all()  # the orphaned `sleep 30` goes with its VM
    client.cancel([late])
    assert_invariants(session)


def test_an_agent_stopped_with_sigterm_has_its_job_retried_at_once(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session(**LEASE)
    pool, client = Pool(session), JobClient(session)
    (vm,) = pool.start("local", 1)
    body = 'sleep 2\necho "attempt $CLOBI_ATTEMPT" > out.txt\n'
    (job,) = client.submit(JobSpec(script=script(tmp_path, body), outputs=("out.txt",)))
    wait_until(lambda: job_processes(job, attempt=1), timeout=30, what="attempt 1 to run")
    processes.terminate(processes.agent_pid(session, vm))
    wait_until(lambda: not job_processes(job, attempt=1), timeout=10, what="the job killed")
    wait_until(  # recorded by the agent on its way out: no reaper needed
        lambda: client.status([job])[0].state is JobState.QUEUED, timeout=10, what="a retry"
    )
    pool.start("local", 1)
    row = client.wait([job], timeout=60)[0]
    assert (row.state, row.attempt) == (JobState.SUCCEEDED, 2)
    assert_invariants(session)


def test_when_the_endpoint_loses_its_state_agents_power_off_and_the_rm_says_why(
    tmp_path: Path,
    aws_endpoint: str,
    make_session: Callable[..., Session],
    resource_manager: Callable[[Session], Any],
) -> None:
    session = make_session(**LEASE)
    rm = resource_manager(session)
    pool = Pool(session)
    vms = pool.start("local", 2)
    (job,) = JobClient(session).submit(JobSpec(script=script(tmp_path, "sleep 100\n")))
    wait_until(lambda: job_processes(job), timeout=30, what="the job to run")
    pids = [processes.agent_pid(session, vm) for vm in vms]
    lose_state(aws_endpoint)
    wait_until(
        lambda: not any(_alive(pid) for pid in pids), timeout=30, what="the agents to power off"
    )
    wait_until(lambda: not job_processes(job), timeout=10, what="the job to be killed")
    assert wait_until(lambda: rm.poll() is not None, timeout=30, what="the RM to stop") == 1
    assert "no longer exists on its endpoint" in rm.stderr.read()
    status = cli("status", "--session", session.id)
    assert status.code == 1 and status.err.count("\n") == 1, status.err


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
