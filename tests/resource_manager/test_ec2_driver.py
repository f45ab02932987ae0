"""What is particular to the `ec2` driver, against the embedded endpoint: the request it sends,
a launch whose answer was lost, the release volumes it sweeps, AWS errors as DriverError.
The contract every driver keeps is in test_driver_contract.py."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from resource_manager.drivers.ec2 import Ec2Driver, client_token
from resource_manager.pool import Pool
from shared import naming
from shared.aws import Aws
from shared.errors import AwsError, DriverError
from shared.models import Bootstrap, Ec2Cloud
from shared.session import Session
from shared.userdata import bootstrap_of
from tests.faults.proxy import FaultProxy, operation

EC2 = Ec2Cloud(
    name="aws", driver="ec2", ami="ami-12c6146b", instance_profile="clobi-agent", spot=True
)


def bootstrap(session: Session, cloud: str) -> Bootstrap:
    return Bootstrap(vm_id=naming.new_vm_id(cloud), cloud=cloud, cores=1, session=session.info)


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


def release_volume(
    session: Session, session_id: str, release: str | None, vm: str = "vm-aws-1"
) -> str:
    """A volume as `vm`'s agent leaves its `ebs` release when killed before deleting it
    (tagged with a release), or without the release tag (a root volume, say)."""
    tags = {naming.TAG_SESSION: session_id, naming.TAG_VM: vm}
    if release:
        tags[naming.TAG_RELEASE] = release
    out = session.aws.client("ec2").create_volume(
        AvailabilityZone="us-east-1a",
        Size=1,
        TagSpecifications=[
            {"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ],
    )
    return str(out["VolumeId"])


def test_cleanup_sweeps_release_volumes_left_by_hard_killed_vms_and_only_those(
    make_session: Callable[..., Session],
) -> None:
    """An agent deletes its `ebs` release volumes when it stops; one hard-killed cannot, so
    session cleanup deletes the volumes tagged with the session and a release."""
    session, other = make_session(clouds=(EC2,)), make_session(clouds=(EC2,))
    leaked = [release_volume(session, session.id, r) for r in ("14.2", "15.0")]
    kept = [release_volume(session, other.id, "14.2"), release_volume(session, session.id, None)]
    assert Pool(session).sweep() == 2
    left = {v["VolumeId"] for v in session.aws.client("ec2").describe_volumes()["Volumes"]}
    assert not left & set(leaked) and set(kept) <= left
    assert Pool(session).sweep() == 0


def test_aws_errors_of_terminate_and_sweep_are_driver_errors(
    make_session: Callable[..., Session], aws_endpoint: str
) -> None:
    """The instance or volume is found, and then EC2 refuses to end it: callers catch
    DriverError, so that is what they get (the AwsError as its cause)."""
    session = make_session(clouds=(EC2,))
    session.aws.client("iam").create_instance_profile(InstanceProfileName="clobi-agent")
    with FaultProxy(aws_endpoint) as proxy:
        driver = Ec2Driver(session.info, EC2, Aws("us-east-1", proxy.url, retries=1))
        boot = bootstrap(session, "aws")
        driver.launch(boot)
        volume = release_volume(session, session.id, "14.2")
        proxy.add("throttle", operation("ec2.TerminateInstances"))
        proxy.add("throttle", operation("ec2.DeleteVolume"))
        with pytest.raises(DriverError, match="Throttling") as terminate:
            driver.terminate([boot.vm_id])
        with pytest.raises(DriverError, match="Throttling") as sweep:
            driver.sweep()
        assert isinstance(terminate.value.__cause__, AwsError)
        assert isinstance(sweep.value.__cause__, AwsError)
        proxy.clear()
        driver.terminate([boot.vm_id])
        assert not any(i.alive for i in driver.instances())
        ec2 = session.aws.client("ec2")
        assert ec2.describe_volumes(VolumeIds=[volume])["Volumes"][0]["State"] == "available"
