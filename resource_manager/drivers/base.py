"""The CloudDriver interface. The cloud, filtered by the session tag, is the truth."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from shared.models import Bootstrap


@dataclass(frozen=True)
class Instance:
    vm_id: str
    instance_id: str
    alive: bool  # pending or running (not stopped, terminated or gone)


class CloudDriver(ABC):
    name: str

    @abstractmethod
    def launch(self, bootstrap: Bootstrap) -> str:
        """Start a VM for `bootstrap.vm_id`; returns its instance id. Blocks until the cloud has
        accepted it (not until it booted). Idempotent per VM id: a retried launch never starts a
        second VM. Raises DriverError."""

    @abstractmethod
    def instances(self) -> list[Instance]:
        """The session's VMs in this cloud as the cloud sees them. Blocks; raises DriverError."""

    @abstractmethod
    def terminate(self, vm_ids: list[str]) -> None:
        """Power VMs off now and verify it. Idempotent: unknown or gone VMs are fine.
        Blocks until they are gone; raises DriverError."""

    def sweep(self) -> int:
        """Delete what the session's VMs created in this cloud and left behind (a VM killed
        before it could clean up after itself); called at session cleanup once every VM is
        gone. Returns how many resources it deleted; raises DriverError."""
        return 0

    def release_leftovers(self, live_vms: set[str]) -> list[str]:
        """While the session runs: delete what VMs not in `live_vms` (stopped, failed, gone)
        created and left behind, never what a live VM may be using. Returns what it deleted;
        raises DriverError."""
        return []
