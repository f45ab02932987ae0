"""An agent with no arguments boots from EC2 user-data served by a fake IMDSv2 server, runs a
job, and drains when the metadata announces a spot interruption."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from job_agent.cli import POWER_OFF
from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from shared.models import Bootstrap, Ec2Cloud
from shared.records import JobState, VmState
from shared.session import Session
from shared.userdata import render
from tests.faults.imds import FakeImds, fake_imds
from tests.helpers import wait_until


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    with fake_imds() as server:
        yield server


CLOUD = Ec2Cloud(name="aws", driver="ec2", ami="ami-1", cores_per_vm=1)


def _boot(
    tmp_path: Path, imds: FakeImds, session: Session, vm_id: str
) -> tuple[Bootstrap, subprocess.Popen[str]]:
    """`clobi agent` with no arguments, on a VM whose user-data the fake IMDS serves."""
    boot = Bootstrap(vm_id=vm_id, cloud="aws", cores=1, session=session.info)
    imds.user_data = render(boot)
    agent = subprocess.Popen(
        [sys.executable, "-m", "clobi", "agent", "--workdir", str(tmp_path / "vm")],
        env=dict(os.environ, AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return boot, agent


def test_an_agent_boots_from_user_data_runs_a_job_and_drains_on_spot_interruption(
    tmp_path: Path, imds: FakeImds, make_session: Callable[..., Session]
) -> None:
    session = make_session(clouds=(CLOUD,), heartbeat_s=0.5)
    boot, agent = _boot(tmp_path, imds, session, "vm-aws-boot01")
    try:
        script = tmp_path / "job.sh"
        script.write_text("echo booted from user-data\n")
        client = JobClient(session)
        job = client.submit(JobSpec(script=str(script)))[0]
        row = client.wait([job], timeout=60)[0]
        assert (row.state, row.vm) == (JobState.SUCCEEDED, boot.vm_id)
        assert client.logs(job)["stdout"] == "booted from user-data\n"
        record = session.vms.get(boot.vm_id)
        assert record is not None and record.state is VmState.RUNNING
        imds.interrupted = True
        assert agent.wait(timeout=30) == 0, "a drained agent powers off"
        assert (tmp_path / "vm" / POWER_OFF).exists(), "the unit's stop hook powers off"
        record = session.vms.get(boot.vm_id)
        assert record is not None and record.state is VmState.STOPPED and record.drain
        assert imds.refused == 0, "every metadata request carried an IMDSv2 token"
    finally:
        if agent.poll() is None:
            agent.kill()
        output = agent.communicate()[0]
        print(output[-3000:])
    assert "spot interruption notice: draining" in output


def test_a_spot_notice_hands_running_jobs_back_at_once_without_counting_an_attempt(
    tmp_path: Path, imds: FakeImds, make_session: Callable[..., Session]
) -> None:
    session = make_session(clouds=(CLOUD,), heartbeat_s=0.5, lease_s=60, max_attempts=1)
    _, agent = _boot(tmp_path, imds, session, "vm-aws-spot01")
    try:
        script = tmp_path / "long.sh"
        script.write_text("sleep 120\n")
        client = JobClient(session)
        (job,) = client.submit(JobSpec(script=str(script)))
        wait_until(lambda: client.status([job])[0].state is JobState.RUNNING, 60, what="running")
        imds.interrupted = True
        assert agent.wait(timeout=30) == 0, "a drained agent powers off"
        # Back in the queue at once (not a lease of 60 s later), its one attempt not counted.
        row = client.status([job])[0]
        assert (row.state, row.attempt, row.max_attempts) == (JobState.QUEUED, 1, 2)
        assert [e.kind for e in client.events([job])][-1] == "interrupted"
    finally:
        if agent.poll() is None:
            agent.kill()
        print(agent.communicate()[0][-3000:])
