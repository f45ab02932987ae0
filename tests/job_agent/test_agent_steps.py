"""The agent loop in-process: a JobAgent stepped by the test until its burst of work is done
(no agent process, no Resource Manager), running real shell jobs against the embedded
endpoint. The end-to-end tests run the same loop in real agent processes."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from job_agent.agent import JobAgent
from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from shared import naming
from shared.models import Bootstrap
from shared.records import JobState
from shared.session import Session
from tests.faults.invariants import assert_invariants


@pytest.fixture
def agent(tmp_path: Path, make_session: Callable[..., Session]) -> Iterator[JobAgent]:
    """A registered 2-core agent of a fresh session, stopped and unmounted at the end."""
    session = make_session()
    boot = Bootstrap(vm_id=naming.new_vm_id("local"), cloud="local", cores=2, session=session.info)
    agent = JobAgent(boot, tmp_path / "vm", idle_wait_s=0)
    agent.session.vms.register(agent.vm_id, agent.cloud, agent.cores)  # as run() does first
    yield agent
    agent.stop()
    agent.volumes.unmount_all()


def burst(agent: JobAgent, client: JobClient, ids: list[str], timeout_s: float = 60.0) -> int:
    """Step the agent until every job is terminal, as a burst-mode worker would; returns the
    most jobs it had running after a step. Fails past `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    most = 0
    while not all(row.state.terminal for row in client.status(ids)):
        assert time.monotonic() < deadline, f"jobs not done in {timeout_s:g} s"
        agent.step()
        most = max(most, len(agent.running()))
    return most


def test_a_stepped_agent_runs_a_burst_of_jobs_each_once(tmp_path: Path, agent: JobAgent) -> None:
    script = tmp_path / "job.sh"
    script.write_text('echo "job $CLOBI_JOB_ID attempt $CLOBI_ATTEMPT"\n')
    client = JobClient(agent.session)
    ids = client.submit(JobSpec(script=str(script), count=6))
    burst(agent, client, ids)
    rows = client.status(ids)
    assert [(r.state, r.attempt, r.vm) for r in rows] == [
        (JobState.SUCCEEDED, 1, agent.vm_id)
    ] * len(ids)
    assert all(client.logs(job)["stdout"] == f"job {job} attempt 1\n" for job in ids)
    kinds = Counter((e.job_id, e.kind) for e in client.events(ids))
    assert all(kinds[(job, "started")] == kinds[(job, "succeeded")] == 1 for job in ids), kinds
    assert_invariants(agent.session)


def test_a_stepped_agent_never_runs_more_than_its_cores(tmp_path: Path, agent: JobAgent) -> None:
    script = tmp_path / "job.sh"
    script.write_text("sleep 0.3\n")
    client = JobClient(agent.session)
    ids = client.submit(JobSpec(script=str(script), count=5))
    most = burst(agent, client, ids)
    assert most == agent.cores, "both slots were used, never more"
    assert all(r.state is JobState.SUCCEEDED for r in client.status(ids))
