"""`ebs` release volumes on EC2: a volume made from the release's snapshot, attached to this
instance (`EbsAttacher`, the EC2 half) and mounted read-only; unmounted, detached and deleted
when the agent stops.

Moto plays the EC2 half but attaches no disk: where the kernel shows the volume (`BlockDevices`)
is tested against a fake /dev, the mount only where root and a block device exist.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from job_agent.volumes.attachments import Attachment, EbsAttacher, device_letter
from job_agent.volumes.base import VolumeProvider, mounting
from job_agent.volumes.mounts import may_mount, mount_read_only, unmount
from shared.errors import ReleaseError

log = logging.getLogger(__name__)


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
        raises ReleaseError (one line), and then leaves no volume behind."""
        with self._lock:
            lock = self._locks.setdefault(release, threading.Lock())
        with lock, mounting(release):
            with self._lock:
                if release in self._mounted:
                    return self._mounted[release].target
            snapshot = self._snapshots.get(release)
            if snapshot is None:
                raise ReleaseError(f"release {release!r} is no EBS snapshot of the session")
            if not may_mount():
                raise ReleaseError(f"release {release}: an EBS volume needs root or CAP_SYS_ADMIN")
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
                raise ReleaseError(
                    f"release {release}: {attachment.volume_id} is attached as "
                    f"{attachment.device}, but no block device showed it within "
                    f"{self._attacher.waits.device_s:g} s"
                )
            time.sleep(self._attacher.waits.poll_s)
        target = self._root / release
        target.mkdir(parents=True, exist_ok=True)
        try:
            mount_read_only(device, target, release)
        except ReleaseError:
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
