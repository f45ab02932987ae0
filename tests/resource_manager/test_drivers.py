"""One contract for every CloudDriver, run against `local` (real agent processes) and `ec2`
(the embedded endpoint's EC2), plus what is particular to EC2."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from resource_manager.drivers import CloudDriver, driver_for
from resource_manager.drivers.ec2 import Ec2Driver, client_token
from resource_manager.pool import Pool
from shared import naming
from shared.models import Bootstrap, Ec2Cloud, LocalCloud
from shared.session import Session
from shared.userdata import bootstrap_of
from tests.faults.proxy import FaultProxy, operation

EC2 = Ec2Cloud(
    name="aws", driver="ec2", ami="ami-12c6146b", instance_profile="clobi-agent", spot=True
)
LOCAL = LocalCloud(name="local", driver="local", cores_per_vm=1, max_vms=4)


@pytest.fixture(params=["local", "ec2"])
def cloud(
    request: pytest.FixtureRequest, make_session: Callable[..., Session]
) -> Iterator[tuple[Session, CloudDriver]]:
    session = make_session(clouds=(LOCAL, EC2))
    session.aws.client("iam").create_instance_profile(InstanceProfileName="clobi-agent")
    config = LOCAL if request.param == "local" else EC2
    yield session, driver_for(session.info, config)


def bootstrap(session: Session, cloud: str) -> Bootstrap:
    return Bootstrap(vm_id=naming.new_vm_id(cloud), cloud=cloud, cores=1, session=session.info)


def test_launch_is_idempotent_per_vm_id(cloud: tuple[Session, CloudDriver]) -> None:
    session, driver = cloud
    boot = bootstrap(session, driver.name)
    first = driver.launch(boot)
    assert driver.launch(boot) == first
    live = [i for i in driver.instances() if i.alive]
    assert [(i.vm_id, i.instance_id) for i in live] == [(boot.vm_id, first)]


def test_terminate_is_verified_and_idempotent(cloud: tuple[Session, CloudDriver]) -> None:
    session, driver = cloud
    keep, kill = bootstrap(session, driver.name), bootstrap(session, driver.name)
    driver.launch(keep)
    driver.launch(kill)
    driver.terminate([kill.vm_id])
    assert {i.vm_id for i in driver.instances() if i.alive} == {keep.vm_id}
    driver.terminate([kill.vm_id, "vm-never-existed"])
    driver.terminate([keep.vm_id])
    assert not any(i.alive for i in driver.instances())


def test_instances_are_only_the_sessions_own(
    cloud: tuple[Session, CloudDriver], make_session: Callable[..., Session]
) -> None:
    session, driver = cloud
    other = make_session(clouds=(LOCAL, EC2))
    other_driver = driver_for(other.info, LOCAL if driver.name == "local" else EC2)
    other_driver.launch(bootstrap(other, driver.name))
    mine = bootstrap(session, driver.name)
    driver.launch(mine)
    assert [i.vm_id for i in driver.instances() if i.alive] == [mine.vm_id]


def _requests(session: Session) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
    """Record every EC2 request the session's clients send (the launch client included)."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        seen.append((model.name, dict(params)))

    for client in (session.aws.client("ec2"), session.aws.unretried("ec2")):
        client.meta.events.register("provide-client-params.ec2.*", record)
    return client, seen


def test_ec2_launch_asks_for_imdsv2_tags_spot_and_carries_no_credentials(
    make_session: Callable[..., Session],
) -> None:
    session = make_session(clouds=(EC2,))
    session.aws.client("iam").create_instance_profile(InstanceProfileName="clobi-agent")
    _, seen = _requests(session)
    boot = bootstrap(session, "aws")
    Ec2Driver(session.info, EC2, session.aws).launch(boot)
    (request,) = [params for name, params in seen if name == "RunInstances"]
    assert request["MetadataOptions"]["HttpTokens"] == "required"
    assert request["InstanceMarketOptions"]["MarketType"] == "spot"
    assert request["IamInstanceProfile"] == {"Name": "clobi-agent"}
    assert request["ClientToken"] == client_token(session.id, boot.vm_id)
    tags = {t["Key"]: t["Value"] for t in request["TagSpecifications"][0]["Tags"]}
    assert tags[naming.TAG_SESSION] == session.id and tags[naming.TAG_VM] == boot.vm_id
    user_data = request["UserData"]
    assert bootstrap_of(user_data) == boot
    for secret in (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in user_data and secret not in bootstrap_of(user_data).model_dump_json()
    assert "aws_secret" not in user_data.lower() and "AKIA" not in user_data


def test_ec2_launch_retried_after_a_lost_response_starts_one_instance(
    make_session: Callable[..., Session], aws_endpoint: str
) -> None:
    """RunInstances takes effect but its answer is lost on the way back (the fault proxy
    resets the connection). The driver looks for the VM by its tag before trying again, so
    one instance runs: moto ignores ClientToken, so nothing else would save it here."""
    with FaultProxy(aws_endpoint) as proxy:
        session = make_session(clouds=(EC2,), endpoint_url=proxy.url)
        session.aws.client("iam").create_instance_profile(InstanceProfileName="clobi-agent")
        lost = proxy.add("drop_response", operation("ec2.RunInstances"), times=1)
        _, seen = _requests(session)
        boot = bootstrap(session, "aws")
        driver = Ec2Driver(session.info, EC2, session.aws)
        instance = driver.launch(boot)
        assert lost.fired == 1
        assert proxy.counts["ec2.RunInstances"] == 1  # found by its tag, not sent again
        runs = [params for name, params in seen if name == "RunInstances"]
        assert {r["ClientToken"] for r in runs} == {client_token(session.id, boot.vm_id)}
        live = [i for i in driver.instances() if i.alive]
        assert [(i.vm_id, i.instance_id) for i in live] == [(boot.vm_id, instance)]


def test_cleanup_sweeps_release_volumes_left_by_hard_killed_vms_and_only_those(
    make_session: Callable[..., Session],
) -> None:
    """An agent deletes its `ebs` release volumes when it stops; one hard-killed cannot, so
    session cleanup deletes the volumes tagged with the session and a release."""
    session, other = make_session(clouds=(EC2,)), make_session(clouds=(EC2,))
    ec2 = session.aws.client("ec2")

    def volume(session_id: str, release: str | None) -> str:
        tags = {naming.TAG_SESSION: session_id, naming.TAG_VM: "vm-aws-1"}
        if release:
            tags[naming.TAG_RELEASE] = release
        out = ec2.create_volume(
            AvailabilityZone="us-east-1a",
            Size=1,
            TagSpecifications=[
                {
                    "ResourceType": "volume",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ],
        )
        return str(out["VolumeId"])

    leaked = [volume(session.id, "14.2"), volume(session.id, "15.0")]
    kept = [volume(other.id, "14.2"), volume(session.id, None)]
    assert Pool(session).sweep() == 2
    left = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    assert not left & set(leaked) and set(kept) <= left
    assert Pool(session).sweep() == 0
