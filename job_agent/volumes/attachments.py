"""The EC2 half of `ebs` releases: volumes made from snapshots in this instance's zone, tagged
with the session, VM and release, attached to this instance; detached and deleted again.

Tested against the embedded endpoint, which does not check the zone or the device name against
the instance, nor the tag conditions of the agent's IAM policy.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from job_agent.boot import InstanceIdentity, instance_identity
from shared.aws import translated
from shared.errors import AwsError, ClobiError
from shared.naming import TAG_RELEASE, TAG_SESSION, TAG_VM

log = logging.getLogger(__name__)
# The names EC2 recommends for EBS volumes on Linux; the root and instance stores sit below.
ATTACH_NAMES = tuple(f"/dev/sd{letter}" for letter in "fghijklmnop")
GONE_STATES = ("deleting", "deleted")


@dataclass(frozen=True)
class Waits:
    """How long each step may take (monotonic seconds) and how often to look again."""

    create_s: float = 600.0  # a volume from a large snapshot can take minutes
    attach_s: float = 120.0
    device_s: float = 60.0  # from "attached" in EC2 to the device node on the VM
    detach_s: float = 20.0  # unmount_all runs within the agent unit's stop timeout
    # EC2 is eventually consistent: a volume just created may be missing from
    # DescribeVolumes for a while. Missing for longer than this, it is gone.
    unseen_s: float = 30.0
    poll_s: float = 1.0  # the first look again; each next one waits half as long again ...
    max_poll_s: float = 8.0  # ... up to this (many agents booting share one Describe rate)


@dataclass(frozen=True)
class Attachment:
    volume_id: str
    device: str  # the name EC2 attached it as, e.g. /dev/sdf


class EbsAttacher:
    """Volumes from snapshots, tagged with the session and VM, attached to this instance.
    Thread-safe; each call blocks until EC2 reports the state it waits for, within `Waits`."""

    def __init__(
        self,
        ec2: Any,
        session_id: str,
        vm_id: str,
        identity: Callable[[], InstanceIdentity] = instance_identity,
        waits: Waits | None = None,
    ) -> None:
        self._ec2 = ec2
        self._tags = {TAG_SESSION: session_id, TAG_VM: vm_id}
        self._identify = identity
        self._identity: InstanceIdentity | None = None
        self.waits = waits or Waits()
        self._lock = threading.Lock()
        self._identity_lock = threading.Lock()  # IMDS is slow to fail: not under _lock
        self._reserved: set[str] = set()  # device names being attached right now
        self._taken: set[str] = set()  # names EC2 refused as in use, though no volume shows them

    def identity(self) -> InstanceIdentity:
        """This instance's id and zone, read once (from IMDS by default). Raises ClobiError."""
        with self._identity_lock:
            if self._identity is None:
                self._identity = self._identify()
            return self._identity

    def attach(self, release: str, snapshot: str) -> Attachment:
        """Create a volume from `snapshot` in this instance's zone and attach it. Raises
        ClobiError (one line); a volume it created is deleted again first."""
        try:
            identity = self.identity()
        except ClobiError as err:
            raise ClobiError(f"release {release}: {err}") from None
        volume_id = self._create(release, snapshot, identity.zone)
        try:
            what = f"release {release}: volume {volume_id}"
            self._wait(volume_id, _available, what, self.waits.create_s)
            return self._attach(release, volume_id, identity.instance_id)
        except BaseException:
            self.discard([volume_id])
            raise

    def _create(self, release: str, snapshot: str, zone: str) -> str:
        tags = {**self._tags, TAG_RELEASE: release, "Name": f"clobi {self._tags[TAG_VM]} {release}"}
        # Tagged in the create call itself: the agent policy allows no untagged volume.
        with translated(f"release {release}: create a volume from {snapshot} in {zone}"):
            out = self._ec2.create_volume(
                SnapshotId=snapshot,
                AvailabilityZone=zone,
                VolumeType="gp3",
                TagSpecifications=[
                    {
                        "ResourceType": "volume",
                        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                    }
                ],
            )
        return str(out["VolumeId"])

    def _attach(self, release: str, volume_id: str, instance_id: str) -> Attachment:
        for _ in ATTACH_NAMES:
            device = self._reserve(release, instance_id)
            try:
                with translated(f"release {release}: attach {volume_id} as {device}"):
                    self._ec2.attach_volume(
                        VolumeId=volume_id, InstanceId=instance_id, Device=device
                    )
                self._wait(
                    volume_id,
                    lambda v: _attached_to(v, instance_id),
                    f"release {release}: volume {volume_id} on {instance_id}",
                    self.waits.attach_s,
                )
                return Attachment(volume_id, device)
            except AwsError as err:
                if err.code != "InvalidParameterValue" or "in use" not in str(err):
                    raise
                with self._lock:  # a name EC2 holds for something we cannot see: try the next
                    self._taken.add(device)
            finally:
                with self._lock:
                    self._reserved.discard(device)
        raise ClobiError(f"release {release}: EC2 refused every device name for {volume_id}")

    def _reserve(self, release: str, instance_id: str) -> str:
        with translated(f"release {release}: list the volumes of {instance_id}"):
            out = self._ec2.describe_volumes(
                Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
            )
        attached = [a["Device"] for v in out["Volumes"] for a in v.get("Attachments", [])]
        used = {device_letter(device) for device in attached}
        with self._lock:
            for name in ATTACH_NAMES:
                if device_letter(name) not in used and name not in self._reserved | self._taken:
                    self._reserved.add(name)
                    return name
        raise ClobiError(f"release {release}: no free device name on {instance_id} (sdf..sdp)")

    def _wait(
        self, volume_id: str, ready: Callable[[dict[str, Any]], bool], what: str, timeout_s: float
    ) -> None:
        """Until EC2 shows the volume `ready`; raises ClobiError when it cannot be (error,
        deleted, missing past `unseen_s`) or after `timeout_s`. Looks again with backoff."""
        began = time.monotonic()
        pause = self.waits.poll_s
        while True:
            found = self._describe([volume_id])
            state = found[0]["State"] if found else "not found"
            if found and ready(found[0]):
                return
            unseen_too_long = time.monotonic() - began >= self.waits.unseen_s
            if state in ("error", *GONE_STATES) or (not found and unseen_too_long):
                raise ClobiError(f"{what} is {state}")
            if time.monotonic() - began >= timeout_s:
                raise ClobiError(f"{what} is still {state} after {timeout_s:.0f} s")
            time.sleep(pause * random.uniform(0.8, 1.2))
            pause = min(pause * 1.5, self.waits.max_poll_s)

    def _describe(self, volume_ids: Iterable[str]) -> list[dict[str, Any]]:
        # A filter rather than VolumeIds: a volume already gone is no error here.
        with translated("describe release volumes"):
            out = self._ec2.describe_volumes(
                Filters=[{"Name": "volume-id", "Values": sorted(volume_ids)}]
            )
        return list(out["Volumes"])

    def leftovers(self) -> list[str]:
        """The release volumes of this VM that EC2 still has (say, of an agent that died).
        The VM's root volume carries its session and VM tags too, never the release tag.
        Never raises."""
        filters = [{"Name": f"tag:{key}", "Values": [value]} for key, value in self._tags.items()]
        filters.append({"Name": "tag-key", "Values": [TAG_RELEASE]})
        try:
            with translated("list this VM's release volumes"):
                out = self._ec2.describe_volumes(Filters=filters)
        except AwsError as err:
            log.warning("%s", err)
            return []
        return [v["VolumeId"] for v in out["Volumes"] if v["State"] not in GONE_STATES]

    def discard(self, volume_ids: Iterable[str]) -> list[str]:
        """Detach and delete volumes, forcing the detach once half of `detach_s` is gone (they
        are read-only and unmounted). Never raises; returns those left behind, logged."""
        left = set(volume_ids)
        start = time.monotonic()
        detached: dict[str, bool] = {}  # volume -> whether its detach was forced
        while left:
            force = time.monotonic() - start >= self.waits.detach_s / 2
            try:
                found = {v["VolumeId"]: v for v in self._describe(left)}
            except AwsError as err:
                log.warning("%s", err)
                found = {}
            for volume_id in sorted(left):
                volume = found.get(volume_id, {"VolumeId": volume_id, "State": "gone"})
                if self._dispose(volume, detached, force):
                    left.discard(volume_id)
            if not left or time.monotonic() - start >= self.waits.detach_s:
                break
            time.sleep(self.waits.poll_s)
        if left:
            log.warning("release volumes left behind, delete them by hand: %s", sorted(left))
        return sorted(left)

    def _dispose(self, volume: dict[str, Any], detached: dict[str, bool], force: bool) -> bool:
        """One step towards deleting a volume; True once it is gone."""
        volume_id, state = volume["VolumeId"], volume["State"]
        try:
            if state == "available":
                with translated(f"delete {volume_id}"):
                    self._ec2.delete_volume(VolumeId=volume_id)
                return True
            asked = detached.get(volume_id)  # None, or whether the detach was forced
            if state == "in-use" and (asked is None or (force and not asked)):
                for attached in volume.get("Attachments", []):
                    with translated(f"detach {volume_id} from {attached['InstanceId']}"):
                        self._ec2.detach_volume(
                            VolumeId=volume_id,
                            InstanceId=attached["InstanceId"],
                            Device=attached["Device"],
                            Force=force,
                        )
                detached[volume_id] = force
        except AwsError as err:
            if err.code == "InvalidVolume.NotFound":
                return True
            log.warning("%s", err)
        return state in ("gone", *GONE_STATES)


def _available(volume: dict[str, Any]) -> bool:
    return bool(volume["State"] == "available")


def _attached_to(volume: dict[str, Any], instance_id: str) -> bool:
    return any(
        a["InstanceId"] == instance_id and a["State"] == "attached"
        for a in volume.get("Attachments", [])
    )


def device_letter(device: str) -> str:
    """`/dev/sdf` and `/dev/xvdf` both name slot `f` (`/dev/sda1` is `a1`)."""
    return re.sub(r"^/dev/(xv|s)d", "", device)
