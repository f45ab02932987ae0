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
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from job_agent.attachments import EbsAttacher, Waits
from job_agent.boot import InstanceIdentity, instance_identity
from job_agent.ebs import BlockDevices, EbsVolumes
from job_agent.mounts import may_mount
from job_agent.releases import release_volumes
from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.drivers.ec2 import Ec2Driver
from resource_manager.iam_policies import fill
from shared import naming, sessionfile
from shared.aws import Aws
from shared.errors import ClobiError
from shared.models import Bootstrap, Ec2Cloud, ReleaseConfig
from shared.session import Session
from tests.faults.imds import fake_imds
from tests.helpers import wait_until

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


@pytest.fixture
def vm(aws_endpoint: str, make_session: Callable[..., Session]) -> Vm:
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


@pytest.fixture
def loop_disks(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Real block devices (loop devices over ext4 images) to stand in for EBS disks."""
    if os.geteuid() != 0 or not (shutil.which("losetup") and shutil.which("mkfs.ext4")):
        pytest.skip("needs root, losetup and mkfs.ext4")
    loops: list[str] = []

    def make(text: str) -> Path:
        content = tmp_path / f"content-{len(loops)}"
        content.mkdir()
        (content / "data.txt").write_text(text)
        image = tmp_path / f"disk-{len(loops)}.img"
        subprocess.run(["truncate", "-s", "8M", str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-d", str(content), str(image)], check=True)
        done = subprocess.run(
            ["losetup", "--find", "--show", "--read-only", str(image)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"no loop device: {done.stderr.strip()}")
        loops.append(done.stdout.strip())
        return Path(loops[-1])

    yield make
    for loop in loops:
        subprocess.run(["losetup", "-d", loop], check=False)


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


def test_the_mount_needs_only_cap_sys_admin_as_the_agent_unit_grants(
    tmp_path: Path, loop_disks: Callable[[str], Path]
) -> None:
    """The EC2 agent runs as user clobi with CAP_SYS_ADMIN (and CAP_DAC_OVERRIDE), not as root:
    util-linux's mount refuses that caller, the mount(2) call the provider makes does not."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv")
    disk = loop_disks("capable\n")
    target = tmp_path / "mnt"
    target.mkdir()
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from job_agent.mounts import may_mount, mount_read_only, unmount\n"
        "assert os.geteuid() != 0 and may_mount()\n"
        "mount_read_only(Path(sys.argv[1]), Path(sys.argv[2]), 'x')\n"
        "print(Path(sys.argv[2], 'data.txt').read_text(), end='')\n"
        "unmount(Path(sys.argv[2]))\n"
    )
    caps = "+sys_admin,+dac_override"
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    as_nobody += [f"--inh-caps={caps}", f"--ambient-caps={caps}"]
    done = subprocess.run(
        [*as_nobody, sys.executable, "-c", code, str(disk), str(target)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "capable\n"
    assert not target.exists() and not os.path.ismount(target)


def test_loop_images_and_bind_mounts_need_only_cap_sys_admin_too(tmp_path: Path) -> None:
    """`loop` and `dir` releases (S3Volumes) mount the same way, as the unit's user."""
    tools = ("setpriv", "losetup", "mkfs.ext4")
    if os.geteuid() != 0 or not all(shutil.which(t) for t in tools):
        pytest.skip("needs root, setpriv, losetup and mkfs.ext4")
    content = tmp_path / "content"
    content.mkdir()
    (content / "data.txt").write_text("looped\n")
    image = tmp_path / "release.img"
    subprocess.run(["truncate", "-s", "8M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-d", str(content), str(image)], check=True)
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from job_agent.mounts import *\n"
        "image, loop_at, bind_at, source = map(Path, sys.argv[1:])\n"
        "assert os.geteuid() != 0 and may_mount()\n"
        "device = loop_device(image, 'x')\n"
        "loop_at.mkdir(); mount_read_only(device, loop_at, 'x')\n"
        "bind_at.mkdir(); bind_read_only(source, bind_at, 'x')\n"
        "print((loop_at / 'data.txt').read_text() + (bind_at / 'data.txt').read_text(), end='')\n"
        "for at in (loop_at, bind_at):\n"
        "    try:\n"
        "        (at / 'new').write_text('no'); print('writable')\n"
        "    except OSError: pass\n"
        "unmount(loop_at); unmount(bind_at); detach_loop(device)\n"
    )
    caps = "+sys_admin,+dac_override"
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    as_nobody += [f"--inh-caps={caps}", f"--ambient-caps={caps}"]
    paths = [image, tmp_path / "loop", tmp_path / "bind", content]
    done = subprocess.run(
        [*as_nobody, sys.executable, "-c", code, *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "looped\nlooped\n"  # read, and no write got through
    assert not os.path.ismount(tmp_path / "loop") and not os.path.ismount(tmp_path / "bind")
