"""The monitor in-process on a fake clock (`step(now)`, no sleeping), against the embedded
endpoint: VMs that never register or stop heartbeating, expired leases, lost messages, the
jobs of VMs the Resource Manager finds stopped or failed. Where an agent's part is needed, the
test plays it through the same tables (register, heartbeat, claim, renew) on EC2 VMs that run
no agent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.monitor import Monitor
from resource_manager.pool import Pool
from shared import naming
from shared.message import decode
from shared.models import Ec2Cloud, LocalCloud
from shared.records import JobState, JobTask, Reason, VmState
from shared.session import Session
from tests.helpers import cli, wait_until
from tests.resource_manager.test_ec2_driver import release_volume

EC2 = Ec2Cloud(name="aws", driver="ec2", ami="ami-12c6146b", instance_profile="clobi-agent")


def ec2_session(make_session: Callable[..., Session], **overrides: object) -> Session:
    """A session whose EC2 VMs boot in the endpoint's EC2 and never run an agent."""
    session = make_session(clouds=(EC2,), **overrides)
    session.aws.client("iam").create_instance_profile(InstanceProfileName="clobi-agent")
    return session


def running_vm(session: Session) -> tuple[Pool, str]:
    """An EC2 VM of the session whose agent (played by the test) has registered."""
    pool = Pool(session)
    (vm,) = pool.start("aws", 1)
    session.vms.register(vm, "aws", 1)
    return pool, vm


def claimed_job(session: Session, tmp_path: Path, vm: str) -> JobTask:
    """A job submitted and claimed by `vm`, as its agent would."""
    script = tmp_path / "job.sh"
    script.write_text("true\n")
    (job,) = JobClient(session).submit(JobSpec(script=str(script)))
    task = session.jobs.claim(job, 0, vm)
    assert task is not None
    return task


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


def test_a_job_no_cloud_can_hold_is_refused_at_submit_and_failed_if_the_clouds_change(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    small = LocalCloud(name="local", driver="local", cores_per_vm=2, max_vms=2)
    big = EC2.model_copy(update={"cores_per_vm": 8})
    session = make_session(clouds=(small, big))
    script = tmp_path / "job.sh"
    script.write_text("true\n")
    refused = cli("submit", "--script", str(script), "--cores", "16", "--session", session.id)
    assert refused.code != 0 and "largest VM of the session has 8" in refused.err
    (job,) = JobClient(session).submit(JobSpec(script=str(script), cores=4))
    # The session's clouds change: its 8-core cloud is gone.
    config = session.info.config.model_copy(update={"clouds": (small,)})
    shrunk = Session(session.info.model_copy(update={"config": config}))
    decisions = Monitor(Pool(shrunk)).step(1000.0)
    row = JobClient(session).status([job])[0]
    assert (row.state, row.reason) == (JobState.FAILED, "too_big"), decisions
    assert any("largest VM of the session's clouds has 2" in d for d in decisions), decisions
    kinds = [(e.kind, e.detail) for e in session.events.for_job(job)]
    assert kinds[-1][0] == "failed" and str(kinds[-1][1]).startswith(Reason.TOO_BIG), kinds


def test_a_vm_whose_heartbeat_lapses_is_failed_terminated_and_its_job_requeued_at_once(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = ec2_session(make_session, vm_timeout_s=30, lease_s=600)
    pool, vm = running_vm(session)
    task = claimed_job(session, tmp_path, vm)
    monitor = Monitor(pool)
    monitor.step(1000.0)
    session.vms.heartbeat(vm, [task.id])
    monitor.step(1029.0)  # a new heartbeat: the VM's clock starts again here
    assert not monitor.step(1058.0), "silent for less than vm_timeout_s"
    decisions = monitor.step(1059.0)
    assert session.vms.get(vm).state is VmState.FAILED
    assert f"{vm}: VM stopped heartbeating; marked failed and terminated" in decisions
    assert not any(i.alive for i in pool.driver("aws").instances())
    # Terminated and verified gone: its job is back at once, not after lease_s (600 s).
    assert f"job {task.id}: {vm} failed; now queued" in decisions
    row = JobClient(session).status([task.id])[0]
    assert (row.state, row.reason, row.attempt) == (JobState.QUEUED, "lost_vm", 1)


def test_a_running_job_whose_lease_is_not_renewed_for_lease_s_is_reaped_and_fenced(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = ec2_session(make_session, lease_s=60, vm_timeout_s=10_000)
    pool, vm = running_vm(session)
    task = claimed_job(session, tmp_path, vm)
    monitor = Monitor(pool)
    monitor.step(1000.0)
    assert session.jobs.renew(task, vm) is False  # renewed: the lease runs from 1059
    monitor.step(1059.0)
    assert not monitor.step(1118.0), "renewed less than lease_s ago"
    decisions = monitor.step(1119.0)
    assert f"job {task.id}: lease of {vm} expired; now queued" in decisions
    row = JobClient(session).status([task.id])[0]
    assert (row.state, row.reason) == (JobState.QUEUED, "lost_vm")
    assert session.jobs.renew(task, vm) is None, "the reaped attempt writes nothing more"
    assert session.vms.get(vm).state is VmState.RUNNING, "its VM still heartbeats"


def test_a_sent_job_whose_message_is_lost_is_sent_again_after_resend_s(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session(resend_s=30)
    script = tmp_path / "job.sh"
    script.write_text("true\n")
    (job,) = JobClient(session).submit(JobSpec(script=str(script)))
    queue = session.info.queue_url(1)
    (lost,) = session.aws.sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
    session.aws.sqs.delete_message(QueueUrl=queue, ReceiptHandle=lost["ReceiptHandle"])
    monitor = Monitor(Pool(session))
    monitor.step(1000.0)
    assert not monitor.step(1029.0), "not claimed for less than resend_s"
    decisions = monitor.step(1030.0)
    assert f"job {job}: message not claimed in 30 s; sending it again" in decisions
    assert "released 1 job messages into the queues" in decisions
    (again,) = session.aws.sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
    hint = decode(again["Body"])
    assert hint is not None and (hint.job_id, hint.attempt) == (job, 0)


def test_volumes_left_available_by_dead_vms_are_deleted_while_the_session_runs(
    make_session: Callable[..., Session],
) -> None:
    """Only a live VM may still attach an available volume of its own; one a stopped or
    failed VM left would bill until session cleanup. The monitor deletes those now and then."""
    session = ec2_session(make_session, vm_timeout_s=10_000)
    pool, live = running_vm(session)
    (dead,) = pool.start("aws", 1)
    pool.kill([dead])
    kept, leaked = (
        release_volume(session, session.id, "14.2", live),
        release_volume(session, session.id, "14.2", dead),
    )
    monitor = Monitor(pool)
    decisions = monitor.step(1000.0)
    assert f"deleted what stopped VMs left in aws: {leaked}" in decisions
    volumes = session.aws.client("ec2").describe_volumes(
        Filters=[{"Name": "tag-key", "Values": [naming.TAG_RELEASE]}]
    )["Volumes"]
    assert {v["VolumeId"] for v in volumes if v["State"] != "deleted"} == {kept}
    again = release_volume(session, session.id, "14.2", dead)
    assert not any("deleted" in d for d in monitor.step(1030.0)), "not before a minute"
    assert f"deleted what stopped VMs left in aws: {again}" in monitor.step(1060.0)
