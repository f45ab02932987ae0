"""The live autoscaler inside `clobi rm --headless`, with real local VMs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from shared.events import SESSION_KEY
from shared.models import AutoscaleConfig, Ec2Cloud, LocalCloud
from shared.records import JobState, VmState
from shared.session import Session
from tests.helpers import cli, wait_until


def autoscale_lines(session: Session) -> list[str]:
    return [e.detail or "" for e in session.events.for_job(SESSION_KEY) if e.kind == "autoscale"]


def test_forty_jobs_start_four_vms_in_one_step_then_idle_vms_are_drained(
    tmp_path: Path,
    make_session: Callable[..., Session],
    resource_manager: Callable[[Session], Any],
) -> None:
    session = make_session(
        clouds=(LocalCloud(name="local", driver="local", cores_per_vm=2, max_vms=4),),
        autoscale=AutoscaleConfig(enabled=True, idle_timeout_s=3, step_s=0.5),
    )
    script = tmp_path / "job.sh"
    script.write_text("sleep 0.2\n")
    client = JobClient(session)
    ids = client.submit(JobSpec(script=str(script), count=40))
    resource_manager(session)
    rows = client.wait(ids, timeout=120)
    assert all(r.state is JobState.SUCCEEDED for r in rows)
    launches = [line for line in autoscale_lines(session) if line.startswith("launch")]
    assert launches[0].startswith("launch 4 VM(s) in local"), launches
    assert len(launches) == 1
    assert len({r.vm for r in rows}) == 4

    def all_stopped() -> bool:
        vms = session.vms.all()
        return len(vms) == 4 and all(vm.state is VmState.STOPPED for vm in vms)

    wait_until(all_stopped, timeout=60, what="the idle VMs to be drained and stop")
    drains = [line for line in autoscale_lines(session) if line.startswith("drain")]
    assert len(drains) == 4 and all("idle for" in line for line in drains)


def test_a_cloud_refusing_launches_is_backed_off_and_the_other_absorbs_the_load(
    tmp_path: Path,
    make_session: Callable[..., Session],
    resource_manager: Callable[[Session], Any],
) -> None:
    broken = Ec2Cloud(
        name="cheap",
        driver="ec2",
        ami="ami-12c6146b",
        cost_per_hour=0.0,
        instance_profile="no-such-profile",
        max_vms=4,
    )
    local = LocalCloud(name="local", driver="local", cores_per_vm=2, max_vms=2, cost_per_hour=0.5)
    session = make_session(
        clouds=(broken, local), autoscale=AutoscaleConfig(enabled=True, step_s=0.5)
    )
    script = tmp_path / "job.sh"
    script.write_text("true\n")
    client = JobClient(session)
    ids = client.submit(JobSpec(script=str(script), count=6))
    resource_manager(session)
    rows = client.wait(ids, timeout=120)
    assert all(r.state is JobState.SUCCEEDED for r in rows)
    lines = autoscale_lines(session)
    assert any(
        line.startswith("launch") and "in cheap" in line and "backing cheap off" in line
        for line in lines
    ), lines
    assert any(
        line.startswith("launch") and "in local" in line and "failed" not in line for line in lines
    ), lines
    assert {vm.cloud for vm in session.vms.all() if vm.state is not VmState.FAILED} == {"local"}


def test_autoscale_can_be_switched_on_and_off_from_the_cli(
    make_session: Callable[..., Session],
) -> None:
    session = make_session()
    sid = ("--session", session.id)
    assert cli("autoscale", "status", "--json", *sid).json()["enabled"] is False
    assert cli("autoscale", "on", *sid).code == 0
    assert cli("autoscale", "status", "--json", *sid).json()["enabled"] is True
    assert cli("autoscale", "off", "--json", *sid).json()["enabled"] is False
    assert cli("vm", "list", "--json", *sid).json() == [], "the switch is not a VM"


def test_a_job_bigger_than_the_cheap_clouds_vms_runs_on_a_vm_of_a_cloud_that_holds_it(
    tmp_path: Path,
    make_session: Callable[..., Session],
    resource_manager: Callable[[Session], Any],
) -> None:
    session = make_session(
        clouds=(
            LocalCloud(name="cheap", driver="local", cores_per_vm=2, max_vms=2, cost_per_hour=0),
            LocalCloud(name="dear", driver="local", cores_per_vm=8, max_vms=1, cost_per_hour=1),
        ),
        autoscale=AutoscaleConfig(enabled=True, idle_timeout_s=60, step_s=0.5),
    )
    script = tmp_path / "job.sh"
    script.write_text('echo "$CLOBI_CORES"\n')
    client = JobClient(session)
    (job,) = client.submit(JobSpec(script=str(script), cores=4))
    resource_manager(session)
    (row,) = client.wait([job], timeout=60)
    assert row.state is JobState.SUCCEEDED and client.logs(job)["stdout"] == "4\n"
    assert [vm.cloud for vm in session.vms.all()] == ["dear"], autoscale_lines(session)
