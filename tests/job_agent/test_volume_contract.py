"""One contract for every VolumeProvider, run over the three kinds of release: `dir` (an S3
archive), `loop` (an S3 ext4 image) and `ebs` (a snapshot, its volume attached in the embedded
endpoint's EC2 and shown to the VM as a loop device, a test thread playing udev). Mount gives
the release's files read-only, once; unmount takes everything away; a failure is one line of
ReleaseError, and leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from job_agent.volumes import VolumeProvider
from job_agent.volumes.ebs import BlockDevices, EbsVolumes
from job_agent.volumes.s3 import S3Volumes
from shared.errors import ReleaseError
from shared.models import ReleaseConfig
from shared.session import Session
from tests.job_agent.ec2vm import Vm, ext4_image

FILES = {"data.txt": "release data\n"}


@dataclass
class Release:
    """A provider with one release, "1.0", holding FILES, not mounted yet."""

    provider: VolumeProvider
    spoil: Callable[[], None]  # make the release's source bad, so that mounting it fails
    left: Callable[[], list[str]]  # its mounts, loop devices and volumes still there


def kernel_traces(root: Path) -> list[str]:
    """Mounts below `root`, and loop devices over files below it."""
    prefix = str(root)
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    loops = subprocess.run(
        ["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    return [m for m in mounts if m.startswith(prefix)] + [x for x in loops if prefix in x]


def needs_loop_devices() -> None:
    if os.geteuid() != 0 or not (shutil.which("losetup") and shutil.which("mkfs.ext4")):
        pytest.skip("needs root, losetup and mkfs.ext4")


def s3_release(tmp_path: Path, make_session: Callable[..., Session], kind: str) -> Release:
    if kind == "dir":
        source = tmp_path / "rel.tar.gz"
        with tarfile.open(source, "w:gz") as tar:
            for name, text in FILES.items():
                (tmp_path / name).write_text(text)
                tar.add(tmp_path / name, arcname=name)
        config = ReleaseConfig(archive=str(source))
    else:
        needs_loop_devices()
        config = ReleaseConfig(image=str(ext4_image(tmp_path, "rel", FILES)))
    session = make_session(releases={"1.0": config})
    info = session.info
    root = tmp_path / "releases"
    provider = S3Volumes(session.aws, info.bucket, info.releases, root, info.release_digests)

    def spoil() -> None:  # replaced behind the session's back: its digest no longer matches
        key = info.releases["1.0"]
        session.aws.s3.put_object(Bucket=info.bucket, Key=key, Body=b"replaced")

    return Release(provider, spoil, lambda: kernel_traces(root))


def ebs_release(tmp_path: Path, vm: Vm, disk: Path) -> Iterator[Release]:
    """EC2 makes and attaches the volume (moto); the kernel would show it as a disk, which a
    thread plays here: each attached release volume's serial is linked to the loop disk."""
    dev, root = tmp_path / "dev", tmp_path / "ebs"
    (dev / "disk" / "by-id").mkdir(parents=True)
    snapshot = vm.snapshots[0]
    provider = EbsVolumes(vm.attacher(), {"1.0": snapshot}, root, BlockDevices(dev))
    stop = threading.Event()

    def udev() -> None:
        while not stop.wait(0.02):
            for volume in vm.volumes():
                serial = volume["VolumeId"].replace("-", "")
                link = dev / "disk" / "by-id" / f"nvme-Amazon_Elastic_Block_Store_{serial}"
                if volume["State"] == "in-use" and not link.is_symlink():
                    link.symlink_to(disk)

    thread = threading.Thread(target=udev, daemon=True)
    thread.start()
    yield Release(
        provider,
        lambda: vm.ec2.delete_snapshot(SnapshotId=snapshot),
        lambda: [v["VolumeId"] for v in vm.volumes()] + kernel_traces(root),
    )
    stop.set()
    thread.join()


@pytest.fixture(params=["dir", "loop", "ebs"])
def release(
    request: pytest.FixtureRequest, tmp_path: Path, make_session: Callable[..., Session]
) -> Iterator[Release]:
    if request.param != "ebs":
        made = s3_release(tmp_path, make_session, request.param)
        yield made
        made.provider.unmount_all()
        return
    needs_loop_devices()
    disk = request.getfixturevalue("loop_disks")(FILES["data.txt"])
    for made in ebs_release(tmp_path, request.getfixturevalue("vm"), disk):
        yield made
        made.provider.unmount_all()


def test_mount_gives_the_release_files_read_only_once(release: Release) -> None:
    path = release.provider.mount("1.0")
    assert {p.name: p.read_text() for p in path.iterdir() if p.is_file()} == FILES
    with pytest.raises(OSError):
        (path / "new.txt").write_text("no")
    with pytest.raises(OSError):
        (path / "data.txt").write_text("no")
    assert release.provider.mount("1.0") == path, "mounted once, the same path after"


def test_unmount_all_takes_everything_away_and_may_be_repeated(release: Release) -> None:
    path = release.provider.mount("1.0")
    assert release.left(), "the mount made something"
    release.provider.unmount_all()
    assert not path.exists() and not os.path.ismount(path)
    assert release.left() == []
    release.provider.unmount_all()


def test_a_release_the_provider_does_not_know_is_one_release_error(release: Release) -> None:
    with pytest.raises(ReleaseError, match=r"9\.9") as err:
        release.provider.mount("9.9")
    assert "\n" not in str(err.value)


def test_a_spoiled_release_is_one_release_error_and_leaves_nothing(release: Release) -> None:
    """A replaced S3 object fails its digest; a deleted snapshot makes EC2 refuse the volume
    (an AWS error, which leaves the provider as ReleaseError too)."""
    release.spoil()
    with pytest.raises(ReleaseError, match=r"release 1\.0") as err:
        release.provider.mount("1.0")
    assert "\n" not in str(err.value)
    assert release.left() == []
