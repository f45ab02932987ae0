"""The monitor on a fake clock, against the embedded endpoint: VMs that never register, and
the jobs of VMs the Resource Manager finds stopped or failed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.monitor import Monitor
from resource_manager.pool import Pool
from shared.models import Ec2Cloud, JobState, VmState
from shared.session import Session
from tests.helpers import wait_until

EC2 = Ec2Cloud(name="aws", driver="ec2", ami="ami-12c6146b", instance_profile="clobi-agent")


def ec2_session(make_session: Callable[..., Session], **overrides: object) -> Session:
    """A session whose EC2 VMs boot in the endpoint's EC2 and never run an agent."""
    session = make_session(clouds=(EC2,), **overrides)
    session.aws.client("iam").create_instance_profile(InstanceProfileName="clobi-agent")
    return session


def test_a_vm_that_never_registers_fails_after_register_timeout_s(
    make_session: Callable[..., Session],
) -> None:
    session = ec2_session(make_session, register_timeout_s=20, vm_timeout_s=5)
    pool = Pool(session)
    (vm,) = pool.start("aws", 1)
    monitor = Monitor(pool)
    monitor.step(1000.0)
    monitor.step(1019.0)
    assert session.vms.get(vm).state is VmState.STARTING, "not before register_timeout_s"
    decisions = monitor.step(1020.0)
    assert session.vms.get(vm).state is VmState.FAILED
    assert any(f"{vm}: VM never registered" in d for d in decisions), decisions
    assert not any(i.alive for i in pool.driver("aws").instances())


def test_a_starting_resource_manager_reaps_at_once_the_jobs_of_a_vm_it_knows_failed(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session(lease_s=600)
    pool = Pool(session)
    client = JobClient(session)
    (vm,) = pool.start("local", 1)
    script = tmp_path / "job.sh"
    script.write_text("sleep 1000\n")
    job = client.submit(JobSpec(script=str(script)))[0]
    wait_until(lambda: client.status([job])[0].state is JobState.RUNNING, what="the job to run")
    # What a Resource Manager that crashed between failing a VM and requeuing its jobs leaves.
    pool.driver("local").terminate([vm])
    session.vms.set_state(vm, VmState.FAILED)
    decisions = Monitor(pool).step(1000.0)
    row = client.status([job])[0]
    assert (row.state, row.reason) == (JobState.QUEUED, "lost_vm"), decisions
    assert f"job {job}: {vm} is failed; now queued" in decisions
