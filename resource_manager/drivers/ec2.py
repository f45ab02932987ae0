"""The `ec2` cloud: VMs are EC2 instances tagged with the session and VM id.

Launch is idempotent twice over: the instance is looked up by its VM tag first, and
RunInstances carries a ClientToken derived from the VM id, so a retried launch (say, after a
lost response) never starts a second instance on AWS. Every AWS error leaves the driver as
the DriverError the interface promises (`_calling`), its AwsError kept as the cause.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from resource_manager.drivers.base import CloudDriver, Instance
from shared.aws import Aws, translated
from shared.errors import AwsError, DriverError
from shared.models import Bootstrap, Ec2Cloud, SessionInfo
from shared.naming import TAG_RELEASE, TAG_SESSION, TAG_VM
from shared.timings import TERMINATE_WAIT_S
from shared.userdata import render

log = logging.getLogger(__name__)
LIVE_STATES = ("pending", "running")
LISTED_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")
LAUNCH_TRIES = 3


def client_token(session_id: str, vm_id: str) -> str:
    return hashlib.sha256(f"{session_id}/{vm_id}".encode()).hexdigest()[:64]


class Ec2Driver(CloudDriver):
    def __init__(self, info: SessionInfo, cloud: Ec2Cloud, aws: Aws | None = None) -> None:
        self.name = cloud.name
        self._cloud = cloud
        self._session_id = info.id
        self._aws = aws or Aws(cloud.region or info.region, cloud.endpoint_url or info.endpoint_url)

    @property
    def _ec2(self) -> Any:
        return self._aws.client("ec2")

    def launch(self, bootstrap: Bootstrap) -> str:
        """Where EC2 has no capacity for one placement (instance type, subnet), the next is
        tried at once; other failures are retried with backoff, each placement under its own
        client token, so a retried request is the same request."""
        error: AwsError | None = None
        placements = self._cloud.placements()
        choice, attempt = 0, 0
        while attempt < LAUNCH_TRIES:
            found = self._find(bootstrap.vm_id)
            if found:
                return found[0]
            try:
                with translated(f"launch {bootstrap.vm_id} in {self.name}"):
                    # botocore's own retry would not look for the instance first, and not
                    # every endpoint honours ClientToken (moto does not).
                    out = self._aws.unretried("ec2").run_instances(
                        **self._request(bootstrap, *placements[choice], choice)
                    )
                return str(out["Instances"][0]["InstanceId"])
            except AwsError as err:
                error = err
                if err.code in _PERMANENT:
                    break
                if err.code in _NO_CAPACITY and choice + 1 < len(placements):
                    choice += 1
                    log.info("%s: %s; trying %s", self.name, err.code, placements[choice])
                    continue
                time.sleep(min(8.0, 0.5 * 2**attempt))
                attempt += 1
                choice = 0 if err.code in _NO_CAPACITY else choice
        raise DriverError(f"cloud {self.name}: cannot launch {bootstrap.vm_id}: {error}") from error

    def _request(
        self, bootstrap: Bootstrap, instance_type: str, subnet: str | None, choice: int
    ) -> dict[str, Any]:
        cloud = self._cloud
        token = client_token(self._session_id, bootstrap.vm_id)
        tags = [
            {"Key": TAG_SESSION, "Value": self._session_id},
            {"Key": TAG_VM, "Value": bootstrap.vm_id},
            {"Key": "Name", "Value": f"clobi {bootstrap.vm_id}"},
        ]
        request: dict[str, Any] = {
            "ImageId": cloud.ami,
            "InstanceType": instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": token if choice == 0 else f"{token[:60]}-{choice}",
            "UserData": render(bootstrap),
            "MetadataOptions": {
                "HttpTokens": "required",
                "HttpEndpoint": "enabled",
                "HttpPutResponseHopLimit": 1,
            },
            "InstanceInitiatedShutdownBehavior": "terminate",
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags[:2]},
            ],
        }
        if cloud.instance_profile:
            request["IamInstanceProfile"] = {"Name": cloud.instance_profile}
        if cloud.spot:
            request["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {
                    "SpotInstanceType": "one-time",
                    "InstanceInterruptionBehavior": "terminate",
                },
            }
        if subnet:
            request["SubnetId"] = subnet
        if cloud.security_group_ids:
            request["SecurityGroupIds"] = list(cloud.security_group_ids)
        return request

    def instances(self) -> list[Instance]:
        return [
            Instance(vm, iid, state in LIVE_STATES)
            for vm, iid, state in self._describe(
                [{"Name": f"tag:{TAG_SESSION}", "Values": [self._session_id]}]
            )
        ]

    def terminate(self, vm_ids: list[str]) -> None:
        ids = [iid for vm in vm_ids for iid in self._find(vm, states=LISTED_STATES)]
        if not ids:
            return
        with self._calling(f"terminate {len(ids)} instances"):
            self._ec2.terminate_instances(InstanceIds=ids)
        deadline = time.monotonic() + TERMINATE_WAIT_S
        while True:
            left = [iid for vm in vm_ids for iid in self._find(vm, states=LIVE_STATES)]
            if not left:
                return
            if time.monotonic() > deadline:
                raise DriverError(f"cloud {self.name}: {', '.join(left)} still not terminated")
            time.sleep(2.0)

    def sweep(self) -> int:
        """Release volumes (`ebs`) of the session's VMs: an agent detaches and deletes its
        own when it stops, but not when its VM was hard-killed or lost. A volume still
        attached to a terminated instance is waited for until EC2 detaches it."""
        deleted = 0
        deadline = time.monotonic() + TERMINATE_WAIT_S
        while True:
            volumes = self._volumes()
            for volume_id, state, _ in volumes:
                if state == "available" and self._delete_volume(volume_id):
                    deleted += 1
            waiting = [v for v, state, _ in volumes if state in ("in-use", "creating")]
            if not waiting:
                return deleted
            if time.monotonic() > deadline:
                raise DriverError(f"cloud {self.name}: volumes {', '.join(waiting)} still in use")
            time.sleep(2.0)

    def release_leftovers(self, live_vms: set[str]) -> list[str]:
        """Release volumes left `available` by VMs that are not live (an agent killed between
        creating or detaching a volume and deleting it): they would bill for ever. A live VM's
        volume is left alone, even `available`: its agent is about to attach it."""
        deleted = []
        for volume_id, state, vm_id in self._volumes():
            if state == "available" and vm_id not in live_vms and self._delete_volume(volume_id):
                deleted.append(volume_id)
        return deleted

    def _delete_volume(self, volume_id: str) -> bool:
        """Delete one volume; False if it was gone already. Raises DriverError."""
        try:
            with translated(f"delete volume {volume_id} in {self.name}"):
                self._ec2.delete_volume(VolumeId=volume_id)
        except AwsError as err:
            if err.code == "InvalidVolume.NotFound":  # gone meanwhile: fine
                return False
            raise DriverError(f"cloud {self.name}: {err}") from err
        return True

    def _volumes(self) -> list[tuple[str, str, str]]:
        """(volume id, state, VM tag) of the session's release volumes, not being deleted."""
        filters = [
            {"Name": f"tag:{TAG_SESSION}", "Values": [self._session_id]},
            {"Name": "tag-key", "Values": [TAG_RELEASE]},
        ]
        with self._calling("list the session's volumes"):
            pages = self._ec2.get_paginator("describe_volumes").paginate(Filters=filters)
            return [
                (v["VolumeId"], v["State"], _tags(v).get(TAG_VM, "?"))
                for page in pages
                for v in page["Volumes"]
                if v["State"] not in ("deleting", "deleted")
            ]

    def _find(self, vm_id: str, states: tuple[str, ...] = LIVE_STATES) -> list[str]:
        return [
            iid
            for _, iid, _ in self._describe(
                [
                    {"Name": f"tag:{TAG_SESSION}", "Values": [self._session_id]},
                    {"Name": f"tag:{TAG_VM}", "Values": [vm_id]},
                    {"Name": "instance-state-name", "Values": list(states)},
                ]
            )
        ]

    def _describe(self, filters: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
        found = []
        with self._calling("list instances"):
            pages = self._ec2.get_paginator("describe_instances").paginate(Filters=filters)
            for page in pages:
                for reservation in page.get("Reservations", []):
                    for inst in reservation.get("Instances", []):
                        found.append(
                            (
                                _tags(inst).get(TAG_VM, "?"),
                                inst["InstanceId"],
                                inst["State"]["Name"],
                            )
                        )
        return found

    @contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        """EC2 calls inside fail as DriverError (botocore's errors translated on the way)."""
        try:
            with translated(f"{what} in {self.name}"):
                yield
        except AwsError as err:
            raise DriverError(f"cloud {self.name}: {err}") from err


# EC2 has no room for this placement now; another type or zone may have.
_NO_CAPACITY = {"InsufficientInstanceCapacity", "InsufficientHostCapacity", "Unsupported"}
_PERMANENT = {
    "InvalidAMIID.Malformed",
    "InvalidAMIID.NotFound",
    "UnauthorizedOperation",
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "NoSuchEntity",
    "InvalidSubnetID.NotFound",
    "InvalidGroup.NotFound",
}


def _tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}
