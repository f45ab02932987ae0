"""An EC2 VM of a session for the release volume tests: an instance launched by the real
driver in the embedded endpoint, snapshots to make volumes from, and loop devices over ext4
images to stand in for the disks EC2 would attach (moto attaches none)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from job_agent.boot import InstanceIdentity
from job_agent.volumes.attachments import EbsAttacher, Waits
from resource_manager.drivers.ec2 import Ec2Driver
from shared import naming
from shared.aws import Aws
from shared.models import Bootstrap, Ec2Cloud, ReleaseConfig
from shared.session import Session

ZONE = "us-east-1c"  # not the endpoint's default zone, so that "in the right zone" means something
FAST = Waits(create_s=10, attach_s=10, device_s=10, detach_s=10, poll_s=0.01)


@dataclass
class Vm:
    """An EC2 instance of a session, launched by the real driver, and snapshots to mount."""

    session: Session
    ec2: Any
    vm_id: str
    identity: InstanceIdentity
    snapshots: list[str]

    def attacher(self, waits: Waits = FAST, instance_id: str | None = None) -> EbsAttacher:
        identity = InstanceIdentity(instance_id or self.identity.instance_id, self.identity.zone)
        return EbsAttacher(self.ec2, self.session.id, self.vm_id, lambda: identity, waits)

    def volumes(self) -> list[dict[str, Any]]:
        """The release volumes in EC2 (the instance's root volume has no release tag)."""
        tag = [{"Name": f"tag:{naming.TAG_RELEASE}", "Values": ["*"]}]
        return list(self.ec2.describe_volumes(Filters=tag)["Volumes"])


def make_snapshot(ec2: Any) -> str:
    volume = ec2.create_volume(Size=1, AvailabilityZone=ZONE)["VolumeId"]
    snapshot = str(ec2.create_snapshot(VolumeId=volume)["SnapshotId"])
    ec2.delete_volume(VolumeId=volume)
    return snapshot


def make_vm(aws_endpoint: str, make_session: Callable[..., Session]) -> Vm:
    ec2 = Aws("us-east-1", aws_endpoint).client("ec2")
    snapshots = [make_snapshot(ec2) for _ in range(3)]
    subnet = ec2.describe_subnets(Filters=[{"Name": "availability-zone", "Values": [ZONE]}])
    cloud = Ec2Cloud(
        name="aws", driver="ec2", ami="ami-12c6146b", subnet_id=subnet["Subnets"][0]["SubnetId"]
    )
    releases = {f"{i}.0": ReleaseConfig(snapshot=s) for i, s in enumerate(snapshots, start=1)}
    session = make_session(clouds=(cloud,), releases=releases)
    vm_id = naming.new_vm_id("aws")
    boot = Bootstrap(vm_id=vm_id, cloud="aws", cores=1, session=session.info)
    instance_id = Ec2Driver(session.info, cloud, session.aws).launch(boot)
    (reservation,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    zone = reservation["Instances"][0]["Placement"]["AvailabilityZone"]
    assert zone == ZONE
    return Vm(session, ec2, vm_id, InstanceIdentity(instance_id, zone), snapshots)


def ext4_image(folder: Path, name: str, files: dict[str, str]) -> Path:
    """An 8 MiB ext4 image holding `files` (name -> text), made without mounting."""
    content = folder / f"{name}.content"
    content.mkdir()
    for file, text in files.items():
        (content / file).write_text(text)
    image = folder / f"{name}.img"
    subprocess.run(["truncate", "-s", "8M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-d", str(content), str(image)], check=True)
    return image
