"""Cloud drivers: a cloud behind a few idempotent calls."""

from __future__ import annotations

from resource_manager.drivers.base import CloudDriver, Instance
from shared.models import Ec2Cloud, LocalCloud, SessionInfo


def driver_for(info: SessionInfo, cloud: LocalCloud | Ec2Cloud) -> CloudDriver:
    """The driver of one configured cloud of a session."""
    if isinstance(cloud, LocalCloud):
        from resource_manager.drivers.local import LocalDriver

        return LocalDriver(info, cloud)
    from resource_manager.drivers.ec2 import Ec2Driver

    return Ec2Driver(info, cloud)


__all__ = ["CloudDriver", "Instance", "driver_for"]
