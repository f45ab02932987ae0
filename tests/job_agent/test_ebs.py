"""`ebs` release volumes. The EC2 half runs for real against the embedded endpoint: volumes
made from a snapshot made there, in the instance's zone, tagged, attached, detached, deleted.

What moto cannot prove, and how far these tests go instead:
- moto attaches no disk: where the kernel shows the volume (`BlockDevices`) is tested against a
  fake /dev; the full mount runs only as root with loop devices, which stand in for the EBS
  disk (the mount itself is real: the job's files are read back from it);
- moto neither checks the zone or device name against the instance nor evaluates IAM
  conditions: the agent policy is checked against the requests the provider really sends.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from job_agent.boot import InstanceIdentity, instance_identity
from job_agent.releases import release_volumes
from job_agent.volumes.attachments import Waits
from job_agent.volumes.ebs import BlockDevices, EbsVolumes
from job_agent.volumes.mounts import may_mount
from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.iam_policies import fill
from shared import naming, sessionfile
from shared.errors import ClobiError
from shared.models import Bootstrap, ReleaseConfig
from shared.session import Session
from tests.faults.imds import fake_imds
from tests.helpers import wait_until
from tests.job_agent.ec2vm import ZONE, Vm


def one_line(err: pytest.ExceptionInfo[ClobiError]) -> str:
    message = str(err.value)
    assert message and "\n" not in message
    return message


# --- the session ------------------------------------------------------------------------------


def test_session_create_records_which_releases_are_snapshots(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    archive = tmp_path / "rel.tar.gz"
    subprocess.run(["tar", "czf", str(archive), "-T", "/dev/null"], check=True)
    session = make_session(
        releases={
            "1.0": ReleaseConfig(archive=str(archive), snapshot="snap-0123456789abcdef0"),
            "2.0": ReleaseConfig(snapshot="snap-9fd433f6"),
        }
    )
    info = sessionfile.resolve(session.id)
    assert info.snapshots == {"1.0": "snap-0123456789abcdef0", "2.0": "snap-9fd433f6"}
    assert list(info.releases) == ["1.0"] and info.release_names() == ["1.0", "2.0"]
    script = tmp_path / "job.sh"
    script.write_text("true\n")
    assert JobClient(session).submit(JobSpec(script=str(script), release="2.0"))


def test_a_release_names_a_well_formed_snapshot_or_some_other_source() -> None:
    with pytest.raises(ValidationError, match="snapshot"):
        ReleaseConfig(snapshot="vol-0123456789abcdef0")
    with pytest.raises(ValidationError, match="archive, an image or a snapshot"):
        ReleaseConfig()


# --- the EC2 half, against the embedded endpoint ---------------------------------------------


def test_a_volume_is_made_from_the_snapshot_in_the_instances_zone_tagged_and_attached(
    vm: Vm,
) -> None:
    attacher = vm.attacher()
    attachment = attacher.attach("1.0", vm.snapshots[0])
    (volume,) = vm.volumes()
    assert volume["VolumeId"] == attachment.volume_id
    assert volume["SnapshotId"] == vm.snapshots[0]
    assert volume["AvailabilityZone"] == ZONE
    tags = {t["Key"]: t["Value"] for t in volume["Tags"]}
    assert tags[naming.TAG_SESSION] == vm.session.id
    assert tags[naming.TAG_VM] == vm.vm_id
    assert tags[naming.TAG_RELEASE] == "1.0"
    (attached,) = volume["Attachments"]
    assert attached["InstanceId"] == vm.identity.instance_id
    assert attached["Device"] == attachment.device == "/dev/sdf"
    assert attached["State"] == "attached"
    assert attacher.discard([attachment.volume_id]) == []
    assert vm.volumes() == []
    assert attacher.discard([attachment.volume_id]) == []  # gone already: nothing to do


def test_several_releases_at_once_get_a_volume_and_a_device_name_each(vm: Vm) -> None:
    attacher = vm.attacher()
    with ThreadPoolExecutor(3) as pool:
        attachments = list(
            pool.map(lambda i: attacher.attach(f"{i + 1}.0", vm.snapshots[i]), range(3))
        )
    assert len({a.device for a in attachments}) == 3
    assert {a.device for a in attachments} <= {f"/dev/sd{c}" for c in "fghijklmnop"}
    by_id = {v["VolumeId"]: v for v in vm.volumes()}
    assert set(by_id) == {a.volume_id for a in attachments}
    for attachment in attachments:
        (attached,) = by_id[attachment.volume_id]["Attachments"]
        assert (attached["InstanceId"], attached["Device"]) == (
            vm.identity.instance_id,
            attachment.device,
        )
    assert sorted(attacher.leftovers()) == sorted(by_id)
    assert attacher.discard(attacher.leftovers()) == []
    assert vm.volumes() == []
    # The instance's root volume carries the session and VM tags too: it is left alone.
    mine = [{"Name": "attachment.instance-id", "Values": [vm.identity.instance_id]}]
    (root,) = vm.ec2.describe_volumes(Filters=mine)["Volumes"]
    assert root["Attachments"][0]["Device"] == "/dev/sda1"


def test_a_missing_snapshot_is_one_clear_error_and_leaves_no_volume(vm: Vm) -> None:
    with pytest.raises(ClobiError) as err:
        vm.attacher().attach("1.0", "snap-0123456789abcdef0")
    message = one_line(err)
    assert "release 1.0" in message and "snap-0123456789abcdef0" in message
    assert vm.volumes() == []


def test_a_failed_attach_deletes_the_volume_it_made(vm: Vm) -> None:
    with pytest.raises(ClobiError) as err:
        vm.attacher(instance_id="i-0123456789abcdef0").attach("1.0", vm.snapshots[0])
    message = one_line(err)
    assert "release 1.0" in message and "attach" in message
    assert vm.volumes() == []


def test_the_agent_policy_allows_the_calls_the_volumes_make(vm: Vm) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        seen.append((model.name, dict(params)))

    vm.ec2.meta.events.register("provide-client-params.ec2.*", record)
    attacher = vm.attacher()
    attacher.discard([attacher.attach("1.0", vm.snapshots[0]).volume_id])
    policy = fill(
        "agent", region="us-east-1", account="123456789012", bucket="b", session=vm.session.info
    )
    allowed: dict[str, list[dict[str, Any]]] = {}
    for statement in policy["Statement"]:
        actions = statement["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            allowed.setdefault(action, []).append(statement)
    calls = {name for name, _ in seen}
    assert calls >= {"CreateVolume", "AttachVolume", "DetachVolume", "DeleteVolume"}
    assert {f"ec2:{name}" for name in calls} <= allowed.keys()
    # The volume's own statement holds at create: the session tag is in the request.
    (create,) = [params for name, params in seen if name == "CreateVolume"]
    (spec,) = create["TagSpecifications"]
    tags = {t["Key"]: t["Value"] for t in spec["Tags"]}
    conditions = [s.get("Condition", {}) for s in allowed["ec2:CreateVolume"]]
    wanted = [
        keys
        for condition in conditions
        for keys in condition.values()
        if "aws:RequestTag/clobi:session" in keys
    ]
    assert wanted and all(
        tags[key.removeprefix("aws:RequestTag/")] == value
        for condition in wanted
        for key, value in condition.items()
    )
    assert spec["ResourceType"] == "volume"
    # Nor may the agent detach or delete a volume without the release tag (a root volume).
    for action in ("ec2:DetachVolume", "ec2:DeleteVolume"):
        on_volumes = [s for s in allowed[action] if "volume/" in str(s["Resource"])]
        assert on_volumes and all(
            s["Condition"]["Null"] == {"aws:ResourceTag/clobi:release": "false"} for s in on_volumes
        )


# --- the VM half ------------------------------------------------------------------------------


def test_a_nitro_volume_is_found_by_its_serial_in_disk_by_id(tmp_path: Path) -> None:
    by_id = tmp_path / "disk" / "by-id"
    by_id.mkdir(parents=True)
    for disk in ("nvme1n1", "nvme2n1"):
        (tmp_path / disk).touch()
    (by_id / "nvme-Amazon_Elastic_Block_Store_vol0aaaaaaaaaaaaaaaa").symlink_to("../../nvme1n1")
    (by_id / "nvme-Amazon_Elastic_Block_Store_vol0bbbbbbbbbbbbbbbb").symlink_to("../../nvme2n1")
    devices = BlockDevices(tmp_path)
    assert devices.find("vol-0bbbbbbbbbbbbbbbb", "/dev/sdf") == tmp_path / "nvme2n1"
    assert devices.find("vol-0aaaaaaaaaaaaaaaa", "/dev/sdg") == tmp_path / "nvme1n1"
    assert devices.find("vol-0cccccccccccccccc", "/dev/sdh") is None


def test_a_xen_volume_is_found_by_the_name_it_was_attached_as(tmp_path: Path) -> None:
    (tmp_path / "xvdg").touch()
    devices = BlockDevices(tmp_path)
    assert devices.find("vol-0aaaaaaaaaaaaaaaa", "/dev/sdg") == tmp_path / "xvdg"
    assert devices.find("vol-0aaaaaaaaaaaaaaaa", "/dev/sdh") is None


def test_a_link_to_a_disk_not_there_yet_is_not_a_device(tmp_path: Path) -> None:
    (tmp_path / "disk" / "by-id").mkdir(parents=True)
    link = tmp_path / "disk" / "by-id" / "nvme-Amazon_Elastic_Block_Store_vol0aaaaaaaaaaaaaaaa"
    link.symlink_to("../../nvme1n1")
    assert BlockDevices(tmp_path).find("vol-0aaaaaaaaaaaaaaaa", "/dev/sdf") is None


def test_the_instance_id_and_zone_come_from_imdsv2(monkeypatch: pytest.MonkeyPatch) -> None:
    identity = {
        "/latest/meta-data/instance-id": "i-0123456789abcdef0",
        "/latest/meta-data/placement/availability-zone": ZONE,
    }
    with fake_imds(identity) as server:
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.url)
        assert instance_identity() == InstanceIdentity("i-0123456789abcdef0", ZONE)
        assert server.refused == 0
    with pytest.raises(ClobiError, match="no instance metadata"):
        instance_identity()


# --- the provider -----------------------------------------------------------------------------


needs_mount = pytest.mark.skipif(not may_mount(), reason="mounting needs root or CAP_SYS_ADMIN")


@needs_mount
def test_a_volume_whose_device_never_shows_is_one_error_and_deleted(tmp_path: Path, vm: Vm) -> None:
    waits = Waits(create_s=10, attach_s=10, device_s=0.2, detach_s=10, poll_s=0.01)
    volumes = EbsVolumes(
        vm.attacher(waits),
        {"1.0": vm.snapshots[0]},
        tmp_path / "ebs",
        BlockDevices(tmp_path / "dev"),
    )
    with pytest.raises(ClobiError) as err:
        volumes.mount("1.0")
    assert "no block device" in one_line(err) and "release 1.0" in one_line(err)
    assert vm.volumes() == []
    volumes.unmount_all()


def test_releases_go_to_the_provider_of_their_kind(
    tmp_path: Path, vm: Vm, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = vm.session.info
    local = Bootstrap(vm_id="vm-local-000001", cloud="local", cores=1, session=info)
    with pytest.raises(ClobiError, match="EC2 VMs only"):
        release_volumes(local, vm.session.aws, tmp_path / "local").mount("1.0")
    with pytest.raises(ClobiError, match="not known"):
        release_volumes(local, vm.session.aws, tmp_path / "local").mount("9.9")
    # On the EC2 VM the snapshot goes to EBS, which asks the instance metadata who it is.
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")
    ec2 = Bootstrap(vm_id=vm.vm_id, cloud="aws", cores=1, session=info)
    volumes = release_volumes(ec2, vm.session.aws, tmp_path / "ec2")
    with pytest.raises(ClobiError, match=r"instance metadata|CAP_SYS_ADMIN"):
        volumes.mount("1.0")
    volumes.unmount_all()
    assert vm.volumes() == []


def test_several_releases_are_mounted_read_only_at_once_and_all_removed_at_the_end(
    tmp_path: Path, vm: Vm, loop_disks: Callable[[str], Path]
) -> None:
    disks = {"1.0": loop_disks("one\n"), "2.0": loop_disks("two\n")}
    dev = tmp_path / "dev"
    (dev / "disk" / "by-id").mkdir(parents=True)
    snapshots = {"1.0": vm.snapshots[0], "2.0": vm.snapshots[1]}
    volumes = EbsVolumes(vm.attacher(), snapshots, tmp_path / "ebs", BlockDevices(dev))
    with ThreadPoolExecutor(2) as pool:
        mounts = {release: pool.submit(volumes.mount, release) for release in disks}
        # Play udev: link each attached volume's serial to the disk of its release.

        def both_attached() -> list[dict[str, Any]]:
            in_use = [v for v in vm.volumes() if v["State"] == "in-use"]
            return in_use if len(in_use) == 2 else []

        attached = wait_until(both_attached, timeout=10, what="both volumes to be attached")
        for volume in attached:
            release = {t["Key"]: t["Value"] for t in volume["Tags"]}[naming.TAG_RELEASE]
            serial = volume["VolumeId"].replace("-", "")
            link = dev / "disk" / "by-id" / f"nvme-Amazon_Elastic_Block_Store_{serial}"
            link.symlink_to(disks[release])
        dirs = {release: future.result(timeout=30) for release, future in mounts.items()}
    assert (dirs["1.0"] / "data.txt").read_text() == "one\n"
    assert (dirs["2.0"] / "data.txt").read_text() == "two\n"
    for path in dirs.values():
        assert os.path.ismount(path)
        with pytest.raises(OSError):
            (path / "new").write_text("no")
    assert volumes.mount("1.0") == dirs["1.0"] and len(vm.volumes()) == 2
    volumes.unmount_all()
    assert not any(path.exists() for path in dirs.values())
    assert vm.volumes() == []
    volumes.unmount_all()
