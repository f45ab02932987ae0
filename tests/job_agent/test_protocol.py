"""The Job Agent's protocol with real agent processes: cancel, fencing, duplicates, poison
messages, priorities, walltime, slots, running logs, releases, the job user."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from job_agent.runner import job_processes
from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.drivers.local import LocalDriver
from resource_manager.pool import Pool
from shared.errors import ClobiError
from shared.message import JobMessage
from shared.models import LocalCloud
from shared.records import JobState
from shared.session import Session
from tests.faults.invariants import assert_invariants
from tests.helpers import wait_until


def script(tmp_path: Path, body: str, name: str = "job.sh") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/bash\n" + body)
    return str(path)


def state_of(client: JobClient, job_id: str) -> JobState:
    return client.status([job_id])[0].state


def test_cancel_kills_a_running_job_that_traps_sigterm_and_its_children(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    Pool(session).start("local", 1)
    client = JobClient(session)
    job = client.submit(
        JobSpec(
            script=script(
                tmp_path,
                "trap 'echo ignoring TERM' TERM\nsleep 1000 &\nwhile true; do sleep 1000; done\n",
            )
        )
    )[0]
    wait_until(lambda: len(job_processes(job)) >= 2, timeout=30, what="the job to run")
    began = time.monotonic()
    assert client.cancel([job]) == {job: "cancelling"}
    wait_until(
        lambda: state_of(client, job) is JobState.CANCELLED,
        timeout=15,
        what="the job to be cancelled",
    )
    wait_until(
        lambda: not job_processes(job),
        timeout=15 - (time.monotonic() - began),
        what="every process of the job to be gone",
    )
    row = client.status([job])[0]
    assert row.reason == "cancelled"
    assert "cancel_requested" in [e.kind for e in client.events([job])]
    assert_invariants(session)


def test_cancel_of_a_queued_job_is_immediate_and_final(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    client = JobClient(session)
    job = client.submit(JobSpec(script=script(tmp_path, "true\n")))[0]
    assert client.cancel([job]) == {job: "cancelled"}
    Pool(session).start("local", 1)
    other = client.submit(JobSpec(script=script(tmp_path, "true\n", "other.sh")))[0]
    client.wait([other], timeout=30)
    assert state_of(client, job) is JobState.CANCELLED
    assert client.status([job])[0].vm is None, "no agent ever claimed it"
    assert client.cancel([job]) == {job: "finished"}


def _one_job_running(
    tmp_path: Path, session: Session, pool: Pool, client: JobClient, sleep_s: int
) -> tuple[str, int]:
    """One VM running one job that writes its attempt number: (job, the VM's agent pid)."""
    (vm,) = pool.start("local", 1)
    body = f'sleep {sleep_s}\necho "attempt $CLOBI_ATTEMPT" > out.txt\n'
    job = client.submit(JobSpec(script=script(tmp_path, body), outputs=("out.txt",)))[0]
    wait_until(lambda: job_processes(job, attempt=1), timeout=30, what="attempt 1 to run")
    pid = LocalDriver(session.info, session.info.config.clouds[0]).agent_pid(vm)
    assert pid is not None
    return job, pid


def test_an_agent_frozen_past_its_lease_kills_its_job_and_records_nothing(
    tmp_path: Path,
    make_session: Callable[..., Session],
    resource_manager: Callable[[Session], Any],
) -> None:
    session = make_session(lease_s=4, heartbeat_s=0.5)
    resource_manager(session)
    pool, client = Pool(session), JobClient(session)
    job, pid = _one_job_running(tmp_path, session, pool, client, sleep_s=6)
    os.kill(pid, signal.SIGSTOP)
    try:
        (healthy,) = pool.start("local", 1)
        wait_until(
            lambda: client.status([job])[0].attempt == 2,
            timeout=30,
            what="the reaper to hand the job to another VM",
        )
    except AssertionError:
        for p in (1, 2, 3):
            print(
                p,
                session.aws.sqs.get_queue_attributes(
                    QueueUrl=session.info.queue_url(p), AttributeNames=["All"]
                )["Attributes"],
            )
        print(session.jobs.get(job))
        raise
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(
        lambda: not job_processes(job, attempt=1),
        timeout=15,
        what="the resumed agent to kill its superseded job",
    )
    rows = client.wait([job], timeout=60)
    assert (rows[0].state, rows[0].attempt, rows[0].vm) == (JobState.SUCCEEDED, 2, healthy)
    events = client.events([job])
    assert [e.attempt for e in events if e.kind in ("succeeded", "failed", "retry")] == [2]
    out = client.fetch([job], tmp_path / "results")[0]
    assert (out / "out.txt").read_text() == "attempt 2\n"
    assert_invariants(session)


def test_the_same_message_delivered_to_several_agents_runs_the_job_once(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    client = JobClient(session)
    job = client.submit(JobSpec(script=script(tmp_path, "sleep 1\n")))[0]
    body = JobMessage(session.id, job, 0).encode()
    for _ in range(5):
        session.aws.sqs.send_message(QueueUrl=session.info.queue_url(1), MessageBody=body)
    Pool(session).start("local", 3)
    rows = client.wait([job], timeout=60)
    assert (rows[0].state, rows[0].attempt) == (JobState.SUCCEEDED, 1)
    assert [e.kind for e in client.events([job])].count("started") == 1
    wait_until(lambda: _queue_empty(session, 1), timeout=30, what="the duplicates to be dropped")
    assert_invariants(session)


def _queue_empty(session: Session, priority: int) -> bool:
    attrs = session.aws.sqs.get_queue_attributes(
        QueueUrl=session.info.queue_url(priority), AttributeNames=["All"]
    )["Attributes"]
    return (
        int(attrs["ApproximateNumberOfMessages"]) == 0
        and int(attrs["ApproximateNumberOfMessagesNotVisible"]) == 0
    )


def test_poison_messages_go_to_the_dead_letter_queue_and_work_goes_on(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    lane = session.info.queue_url(1)
    poison = [
        "not json at all",
        json.dumps({"v": 1, "s": session.id, "j": "nope.0", "a": 0}),
        JobMessage("another-session", "x.0", 0).encode(),
        "\x00\x01binary",
    ]
    for body in poison:
        session.aws.sqs.send_message(QueueUrl=lane, MessageBody=body)
    Pool(session).start("local", 1)
    client = JobClient(session)
    job = client.submit(JobSpec(script=script(tmp_path, "true\n")))[0]
    assert client.wait([job], timeout=30)[0].state is JobState.SUCCEEDED

    def dead() -> list[dict[str, Any]]:
        out = session.aws.sqs.receive_message(
            QueueUrl=session.info.queue_urls["dlq"],
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            VisibilityTimeout=0,
        )
        messages = out.get("Messages", [])
        return messages if len(messages) == len(poison) else []

    messages = wait_until(dead, timeout=30, what="the poison in the dead-letter queue")
    assert sorted(m["Body"] for m in messages) == sorted(poison)
    reasons = " ".join(m["MessageAttributes"]["reason"]["StringValue"] for m in messages)
    assert "unknown job nope.0" in reasons and "another session" in reasons
    wait_until(lambda: _queue_empty(session, 1), timeout=10, what="an empty lane")
    assert_invariants(session)


def test_a_high_priority_job_starts_before_a_waiting_backlog_of_low_ones(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session(
        clouds=(LocalCloud(name="local", driver="local", cores_per_vm=1, max_vms=1),)
    )
    Pool(session).start("local", 1)
    client = JobClient(session)
    blocker = client.submit(JobSpec(script=script(tmp_path, "sleep 2\n", "block.sh")))[0]
    wait_until(
        lambda: state_of(client, blocker) is JobState.RUNNING, timeout=30, what="the blocker to run"
    )
    low = client.submit(JobSpec(script=script(tmp_path, "true\n", "low.sh"), count=20))
    high = client.submit(JobSpec(script=script(tmp_path, "true\n", "high.sh"), priority=3))[0]
    rows = {r.id: r for r in client.wait([*low, high], timeout=120)}
    first_low = min(rows[j].started_at for j in low if rows[j].started_at)
    started = rows[high].started_at
    assert started is not None and started < first_low


def test_one_agent_alone_works_through_a_backlog_many_times_its_dispatch_window(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    """No Resource Manager: the agent tops the window up itself, before it would go idle
    (an agent that idled first would wait a minute a window)."""
    session = make_session(dispatch_window=2)
    Pool(session).start("local", 1)
    client = JobClient(session)
    ids = client.submit(JobSpec(script=script(tmp_path, "true\n"), count=12))
    rows = client.wait(ids, timeout=30)
    assert [r.state for r in rows] == [JobState.SUCCEEDED] * 12
    assert_invariants(session)


def test_walltime_kills_the_job_with_reason_walltime(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    Pool(session).start("local", 1)
    client = JobClient(session)
    job = client.submit(
        JobSpec(script=script(tmp_path, "sleep 100\n"), walltime=1, max_attempts=1)
    )[0]
    row = client.wait([job], timeout=30)[0]
    assert (row.state, row.reason) == (JobState.FAILED, "walltime")
    assert not job_processes(job)
    assert_invariants(session)


def test_a_job_asking_two_cores_takes_two_slots(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    Pool(session).start("local", 1)
    client = JobClient(session)
    ids = client.submit(
        JobSpec(script=script(tmp_path, 'test "$CLOBI_CORES" = 2\nsleep 1\n'), cores=2, count=3)
    )
    rows = sorted(client.wait(ids, timeout=60), key=lambda r: r.started_at or 0)
    assert all(r.state is JobState.SUCCEEDED for r in rows)
    for earlier, later in itertools.pairwise(rows):
        assert earlier.finished_at and later.started_at and earlier.finished_at <= later.started_at


def test_logs_show_a_running_jobs_output_so_far(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session(log_ship_s=0.5)
    Pool(session).start("local", 1)
    client = JobClient(session)
    job = client.submit(JobSpec(script=script(tmp_path, "echo step 1\nsleep 30\necho step 2\n")))[0]
    wait_until(
        lambda: client.logs(job)["stdout"] == "step 1\n",
        timeout=30,
        what="the first line to be shipped",
    )
    assert state_of(client, job) is JobState.RUNNING
    client.cancel([job])


@pytest.mark.skipif(os.geteuid() != 0, reason="running jobs as another user needs root")
def test_jobs_run_as_the_configured_unprivileged_user(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session(job_user="clobi-test")
    Pool(session).start("local", 1)
    client = JobClient(session)
    job = client.submit(
        JobSpec(script=script(tmp_path, "id -un\ntouch mine.txt\n"), outputs=("mine.txt",))
    )[0]
    row = client.wait([job], timeout=30)[0]
    assert row.state is JobState.SUCCEEDED, client.logs(job)
    assert client.logs(job)["stdout"] == "clobi-test-1\n"  # slot 1's user


def test_kill_9_of_an_agent_retries_its_job_elsewhere_with_one_result(
    tmp_path: Path,
    make_session: Callable[..., Session],
    resource_manager: Callable[[Session], Any],
) -> None:
    session = make_session(lease_s=4, heartbeat_s=0.5)
    resource_manager(session)
    pool, client = Pool(session), JobClient(session)
    job, pid = _one_job_running(tmp_path, session, pool, client, sleep_s=3)
    os.kill(pid, signal.SIGKILL)  # the agent only: its job is orphaned, not killed
    (survivor,) = pool.start("local", 1)
    rows = client.wait([job], timeout=90)
    assert (rows[0].state, rows[0].attempt, rows[0].vm) == (JobState.SUCCEEDED, 2, survivor)
    events = client.events([job])
    assert [e.kind for e in events if e.kind in ("succeeded", "failed")] == ["succeeded"]
    # Reaped when its lease expired, or at once when the monitor found the VM gone.
    assert any(e.kind == "lost" and e.detail for e in events)
    wait_until(
        lambda: not job_processes(job, attempt=1),
        timeout=30,
        what="the orphaned attempt to be killed with its VM",
    )
    out = client.fetch([job], tmp_path / "results")[0]
    assert (out / "out.txt").read_text() == "attempt 2\n"
    assert_invariants(session)


def test_fetch_refuses_an_output_sandbox_with_a_link_or_dot_dot_and_writes_nothing_outside(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    import io

    session = make_session()
    Pool(session).start("local", 1)
    client = JobClient(session)
    job = client.submit(JobSpec(script=script(tmp_path, "true\n")))[0]
    row = client.wait([job], timeout=30)[0]
    assert row.result_key
    for member in ("link", "../../evil"):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            info = tarfile.TarInfo(member)
            if member == "link":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = 4
                tar.addfile(info, io.BytesIO(b"evil"))
        session.aws.s3.put_object(
            Bucket=session.info.bucket, Key=row.result_key, Body=buffer.getvalue()
        )
        dest = tmp_path / "deep" / "er" / "dest"
        with pytest.raises(ClobiError, match=re.escape(f"job {job}: sandbox member '{member}'")):
            client.fetch([job], dest)
        assert not (tmp_path / "deep" / "evil").exists()
        assert not (dest / job / "link").exists()
