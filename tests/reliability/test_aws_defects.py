"""What the unkind endpoint (tests/faults/unkind.py) found besides the transaction and retry
defects of test_unkind.py: reads that trusted an index right after a write, EC2 calls that
trusted Describe* right after a create, launches that gave up on one full zone or type, a
queue read right after its creation. Each test fails on the code before its fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from job_agent.volumes.attachments import EbsAttacher
from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.drivers.ec2 import Ec2Driver
from resource_manager.lifecycle import create_session
from resource_manager.monitor import Monitor
from resource_manager.pool import Pool
from shared import naming
from shared.aws import Aws
from shared.models import Bootstrap, Ec2Cloud, LocalCloud, SessionConfig
from shared.records import JobState, VmState
from shared.session import Session
from shared.transitions import SENT
from tests.faults.proxy import FaultProxy, operation
from tests.faults.unkind import Unkind
from tests.job_agent.ec2vm import FAST, make_vm

NO_VMS = (LocalCloud(name="local", driver="local", cores_per_vm=1, max_vms=1),)
EC2 = Ec2Cloud(name="aws", driver="ec2", ami="ami-12c6146b", instance_profile="clobi-agent")


def _jobs(tmp_path: Path, count: int) -> JobSpec:
    script = tmp_path / "job.sh"
    script.write_text("true\n")
    return JobSpec(script=str(script), count=count)


def test_wait_for_every_job_right_after_a_submit_sees_them_all_despite_a_lagging_index(
    tmp_path: Path, proxy: FaultProxy, make_session: Callable[..., Session]
) -> None:
    """`clobi wait` without ids used to list the jobs from the state index: right after a
    submit it saw none, and said every job was done."""
    session = make_session(endpoint_url=proxy.url, clouds=NO_VMS)
    proxy.unkind.become(Unkind(seed=1, gsi_lag_s=30))
    client = JobClient(session)
    client.status()  # an earlier look at the index: its answer is what the lag shows
    client.submit(_jobs(tmp_path, 3))
    with pytest.raises(TimeoutError, match="3 queued"):
        client.wait(timeout=1.0)
    assert proxy.unkind.injected["stale index read"] > 0


def test_a_submit_sends_its_jobs_messages_though_the_index_does_not_show_them_yet(
    tmp_path: Path, aws_endpoint: str, proxy: FaultProxy, make_session: Callable[..., Session]
) -> None:
    """The submitter's own fill used to look for its jobs in the dispatch index, right after
    writing them: with the index behind, it sent nothing, and the jobs waited for another
    dispatcher (an agent's or the Resource Manager's)."""
    session = make_session(endpoint_url=proxy.url, clouds=NO_VMS)
    proxy.unkind.become(Unkind(seed=2, gsi_lag_s=30))
    client = JobClient(session)
    client.status()
    ids = client.submit(_jobs(tmp_path, 2))
    direct = Session(session.info, Aws(session.info.region, aws_endpoint))
    assert sorted(i["id"] for i in direct.jobs.by_dispatch(SENT)) == sorted(ids)
    depth, _ = direct.queues.depths()
    assert depth["p1"] == 2


def test_a_release_volume_missing_from_describe_right_after_its_creation_is_waited_for(
    aws_endpoint: str, proxy: FaultProxy, make_session: Callable[..., Session]
) -> None:
    """EC2 may not list a volume it has just created: that used to fail the job's release
    ("volume ... is gone") and abandon the volume."""
    vm = make_vm(aws_endpoint, make_session)
    proxy.unkind.become(Unkind(seed=3, ec2_lag_s=2.0))
    ec2 = Aws("us-east-1", proxy.url).client("ec2")
    attacher = EbsAttacher(ec2, vm.session.id, vm.vm_id, lambda: vm.identity, FAST)
    attachment = attacher.attach("1.0", vm.snapshots[0])
    assert proxy.unkind.injected["ec2 describe missing"] > 0
    (volume,) = vm.volumes()
    assert volume["VolumeId"] == attachment.volume_id and volume["State"] == "in-use"
    assert attacher.discard([attachment.volume_id]) == []


def test_a_launch_without_capacity_tries_the_next_type_and_zone_before_giving_up(
    aws_endpoint: str, proxy: FaultProxy, make_session: Callable[..., Session]
) -> None:
    """EC2 has no capacity for one instance type in one zone at times; another may have."""
    direct = Aws("us-east-1", aws_endpoint).client("ec2")
    subnets = [s["SubnetId"] for s in direct.describe_subnets()["Subnets"]][:2]
    cloud = Ec2Cloud(
        name="aws",
        driver="ec2",
        ami="ami-12c6146b",
        instance_type=("c5.large", "c5a.large"),
        subnet_id=tuple(subnets),
    )
    session = make_session(clouds=(cloud,))
    full = proxy.add(
        "fail",
        operation("ec2.RunInstances", body=b"InstanceType=c5.large"),
        code="InsufficientInstanceCapacity",
    )
    driver = Ec2Driver(session.info, cloud, Aws("us-east-1", proxy.url))
    boot = Bootstrap(vm_id=naming.new_vm_id("aws"), cloud="aws", cores=2, session=session.info)
    instance = driver.launch(boot)
    assert full.fired == 2, "both subnets tried with the first type"
    (reservation,) = direct.describe_instances(InstanceIds=[instance])["Reservations"]
    assert reservation["Instances"][0]["InstanceType"] == "c5a.large"


def test_a_session_is_created_though_sqs_does_not_know_its_new_queue_at_once(
    proxy: FaultProxy, make_session: Callable[..., Session]
) -> None:
    """AWS asks callers to wait a second after CreateQueue: reading the dead-letter queue's
    ARN at once may meet "no such queue", which used to fail the whole session create."""
    not_yet = proxy.add(
        "fail",
        operation("sqs.GetQueueAttributes"),
        times=2,
        code="AWS.SimpleQueueService.NonExistentQueue",
    )
    config: dict[str, Any] = {"name": "test", "endpoint_url": proxy.url, "clouds": NO_VMS}
    info = create_session(SessionConfig(**config))
    assert not_yet.fired == 2
    assert Session(info).queues.depths()[0]["p1"] == 0


def test_the_monitor_counts_jobs_without_reading_an_index_of_every_finished_job(
    tmp_path: Path, proxy: FaultProxy, make_session: Callable[..., Session]
) -> None:
    """Counting a state by reading its index grows with the session (100,000 succeeded jobs:
    about 40 MB a count, every step of a console). Finished jobs are counted as they finish:
    the monitor's counts are right and it reads no index of finished jobs."""
    session = make_session(endpoint_url=proxy.url)
    client = JobClient(session)
    ok, bad = tmp_path / "ok.sh", tmp_path / "bad.sh"
    ok.write_text("true\n")
    bad.write_text("exit 3\n")
    (cancelled,) = client.submit(JobSpec(script=str(ok)))
    assert client.cancel([cancelled]) == {cancelled: "cancelled"}
    ran = client.submit(JobSpec(script=str(ok), count=3))
    ran += client.submit(JobSpec(script=str(bad), max_attempts=1))
    pool = Pool(session)
    pool.start("local", 1)
    client.wait(ran, timeout=60)
    pool.terminate_all()
    client.submit(JobSpec(script=str(ok)))  # stays queued: no VM
    finished_reads = proxy.add("pass", operation("dynamodb.Query", body=b'"succeeded"'))
    monitor = Monitor(pool)
    monitor.step(1000.0)
    assert finished_reads.fired == 0
    counts = {state: n for state, n in monitor.snapshot.jobs.items() if n}
    assert counts == {"succeeded": 3, "failed": 1, "cancelled": 1, "queued": 1}


def test_an_agent_finds_work_in_a_higher_queue_though_every_short_poll_misses(
    tmp_path: Path, proxy: FaultProxy, make_session: Callable[..., Session]
) -> None:
    """A receive without a wait asks some of SQS's servers only, and may answer empty while
    messages are there. Agents used to look at the higher queues with such receives alone (and
    long-poll only the lowest): a priority-2 job could wait for ever. Before idling, an agent
    now looks at every queue once more with a short wait (when no job of its own runs)."""
    session = make_session(endpoint_url=proxy.url, priorities=3, clouds=NO_VMS)
    proxy.unkind.become(Unkind(seed=5, short_poll_miss_rate=1.0))
    Pool(session).start("local", 1)
    client = JobClient(session)
    script = tmp_path / "job.sh"
    script.write_text("true\n")
    (job,) = client.submit(JobSpec(script=str(script), priority=2))
    (row,) = client.wait([job], timeout=30)
    assert row.state is JobState.SUCCEEDED
    assert proxy.unkind.injected["short poll missed"] > 0


def test_a_vm_its_cloud_does_not_list_yet_right_after_launch_is_not_failed(
    proxy: FaultProxy, make_session: Callable[..., Session]
) -> None:
    """EC2 may leave an instance it has just launched out of DescribeInstances for a while:
    the monitor used to take it for gone three heartbeats after its launch, and fail it."""
    session = make_session(endpoint_url=proxy.url, clouds=(EC2,), register_timeout_s=300)
    session.aws.client("iam").create_instance_profile(InstanceProfileName="clobi-agent")
    proxy.unkind.become(Unkind(seed=6, ec2_lag_s=600))
    pool = Pool(session)
    (vm,) = pool.start("aws", 1)
    monitor = Monitor(pool)
    monitor.step(1000.0)
    decisions = monitor.step(1030.0)
    assert proxy.unkind.injected["ec2 describe missing"] > 0
    record = session.vms.get(vm)
    assert record is not None and record.state is VmState.STARTING, decisions
    assert f"{vm}: VM is gone from its cloud; marked failed and terminated" in monitor.step(1061.0)
