"""`ebs` release volumes on EC2: a volume made from the release's snapshot, attached to this
instance (`EbsAttacher`, the EC2 half) and mounted read-only; unmounted, detached and deleted
when the agent stops.

Moto plays the EC2 half but attaches no disk: where the kernel shows the volume (`BlockDevices`)
is tested against a fake /dev, the mount only where root and a block device exist.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from job_agent.attachments import Attachment, EbsAttacher, device_letter
from job_agent.volumes import VolumeProvider
from shared.errors import ClobiError

log = logging.getLogger(__name__)
CAP_SYS_ADMIN = 21
MS_RDONLY, MS_NOSUID, MS_NODEV = 1, 2, 4
MNT_DETACH = 2
PREFERRED_FILESYSTEMS = ("ext4", "xfs", "squashfs", "erofs", "btrfs")


class BlockDevices:
    """Where the kernel shows an attached EBS volume. Nitro: an NVMe disk whose serial is the
    volume id without its dash, linked by udev in /dev/disk/by-id. Xen: the name it was
    attached as, `sdf` shown as `xvdf` (or as itself)."""

    def __init__(self, dev: Path = Path("/dev")) -> None:
        self._dev = dev

    def find(self, volume_id: str, attached_as: str) -> Path | None:
        """The block device of the volume, None while it has not appeared. Never blocks."""
        serial = volume_id.replace("-", "")
        letter = device_letter(attached_as)
        for path in (
            self._dev / "disk" / "by-id" / f"nvme-Amazon_Elastic_Block_Store_{serial}",
            self._dev / f"xvd{letter}",
            self._dev / f"sd{letter}",
        ):
            if path.exists():
                return path.resolve()
        return None


@dataclass(frozen=True)
class _Mounted:
    attachment: Attachment
    target: Path


class EbsVolumes(VolumeProvider):
    """Releases given as EBS snapshots: a volume each, attached to this instance and mounted
    read-only under `root` (root or CAP_SYS_ADMIN needed). Several at once; a release's first
    mount blocks as long as EC2 takes, other releases are not held up by it."""

    def __init__(
        self,
        attacher: EbsAttacher,
        snapshots: dict[str, str],
        root: Path,
        devices: BlockDevices | None = None,
    ) -> None:
        self._attacher = attacher
        self._snapshots = snapshots
        self._root = root
        self._devices = devices or BlockDevices()
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._mounted: dict[str, _Mounted] = {}

    def mount(self, release: str) -> Path:
        """Blocks while EC2 makes and attaches the volume (bounded by `Waits`); idempotent;
        raises ClobiError (one line), and then leaves no volume behind."""
        with self._lock:
            lock = self._locks.setdefault(release, threading.Lock())
        with lock:
            with self._lock:
                if release in self._mounted:
                    return self._mounted[release].target
            snapshot = self._snapshots.get(release)
            if snapshot is None:
                raise ClobiError(f"release {release!r} is no EBS snapshot of the session")
            if not may_mount():
                raise ClobiError(f"release {release}: an EBS volume needs root or CAP_SYS_ADMIN")
            attachment = self._attacher.attach(release, snapshot)
            try:
                target = self._mount(release, attachment)
            except BaseException:
                self._attacher.discard([attachment.volume_id])
                raise
            with self._lock:
                self._mounted[release] = _Mounted(attachment, target)
            log.info(
                "release %s: %s mounted read-only at %s", release, attachment.volume_id, target
            )
            return target

    def _mount(self, release: str, attachment: Attachment) -> Path:
        deadline = time.monotonic() + self._attacher.waits.device_s
        while (device := self._devices.find(attachment.volume_id, attachment.device)) is None:
            if time.monotonic() >= deadline:
                raise ClobiError(
                    f"release {release}: {attachment.volume_id} is attached as "
                    f"{attachment.device}, but no block device showed it within "
                    f"{self._attacher.waits.device_s:g} s"
                )
            time.sleep(self._attacher.waits.poll_s)
        target = self._root / release
        target.mkdir(parents=True, exist_ok=True)
        try:
            mount_read_only(device, target, release)
        except ClobiError:
            target.rmdir()
            raise
        return target

    def unmount_all(self) -> None:
        """See VolumeProvider. Unmounts, then detaches and deletes this VM's volumes, those
        an earlier agent left too; call it once every mount has returned."""
        with self._lock:
            mounted, self._mounted = list(self._mounted.values()), {}
        for entry in mounted:
            unmount(entry.target)
        volumes = [entry.attachment.volume_id for entry in mounted]
        volumes += [v for v in self._attacher.leftovers() if v not in volumes]
        self._attacher.discard(volumes)
        try:
            self._root.rmdir()
        except OSError:
            pass  # never made, or something else lives there


def may_mount() -> bool:
    """Root, or the CAP_SYS_ADMIN capability the agent's systemd unit grants it."""
    if os.geteuid() == 0:
        return True
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    return False


def mount_read_only(device: Path, target: Path, release: str) -> None:
    """mount(2) itself: util-linux's mount refuses a caller that is not root even with
    CAP_SYS_ADMIN, all the agent's systemd unit grants. Each block filesystem the kernel knows
    is tried in turn, as `mount -t auto` does. Raises ClobiError."""
    libc = ctypes.CDLL(None, use_errno=True)
    flags = MS_RDONLY | MS_NOSUID | MS_NODEV
    failures = []
    for fstype in _block_filesystems():
        source, path = os.fsencode(device), os.fsencode(target)
        if libc.mount(source, path, fstype.encode(), flags, None) == 0:
            return
        failures.append(ctypes.get_errno())
    # EINVAL is what a filesystem that is not on the device answers: any other errno says more.
    cause = next((e for e in failures if e != errno.EINVAL), errno.EINVAL)
    raise ClobiError(f"release {release}: cannot mount {device} read-only: {os.strerror(cause)}")


def _block_filesystems() -> list[str]:
    """The filesystems the kernel can mount from a block device, the likely ones first."""
    try:
        lines = Path("/proc/filesystems").read_text().splitlines()
    except OSError:
        return list(PREFERRED_FILESYSTEMS)
    known = [line.strip() for line in lines if not line.startswith("nodev")]
    known = [name for name in known if name and name != "fuseblk"]
    return [n for n in PREFERRED_FILESYSTEMS if n in known] + [
        n for n in known if n not in PREFERRED_FILESYSTEMS
    ]


def unmount(target: Path) -> None:
    """Unmount, lazily if it is busy, and remove the mount point. Never raises."""
    libc = ctypes.CDLL(None, use_errno=True)
    path = os.fsencode(target)
    if libc.umount2(path, 0) != 0 and libc.umount2(path, MNT_DETACH) != 0:
        log.warning("cannot unmount %s: %s", target, os.strerror(ctypes.get_errno()))
    try:
        target.rmdir()
    except OSError as err:
        log.warning("cannot remove %s: %s", target, err.strerror)
