"""One step of the Resource Manager, the same under the console and headless: hold the
session's lease and, while holding it, watch the pool (the monitor) and size it (the autoscaler).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from resource_manager.autoscaler import Autoscaler
from resource_manager.lease import RmLease, lease_line
from resource_manager.monitor import Monitor
from resource_manager.pool import Pool
from shared.errors import AwsError, SessionNotFound

log = logging.getLogger("clobi.rm")


@dataclass(frozen=True)
class Now:
    """One instant on the two clocks a step reads. `mono` (time.monotonic) measures this
    process's intervals: leases, timeouts, pacing. `wall` (time.time) is compared with what is
    recorded (a VM's start), so it means the same after a restart or on another machine."""

    mono: float
    wall: float

    @classmethod
    def read(cls) -> Now:
        return cls(time.monotonic(), time.time())


class ResourceManager:
    def __init__(self, pool: Pool, holder: str | None = None) -> None:
        self.pool = pool
        self.monitor = Monitor(pool)
        self.autoscaler = Autoscaler(pool, self.monitor)
        self.lease = RmLease(pool.session.vms, pool.session.info.config.lease_s, holder)
        self.active: bool | None = None  # holds the session's lease (None: not asked yet)

    def step(self, now: Now) -> list[str]:
        """Take or renew the lease; only while holding it, one monitor and one autoscaler
        pass. Returns what changed, as lines for a log: who is active (when that changed) and
        the decisions. Blocks on AWS calls. Raises SessionNotFound when the session's tables
        are gone (no later step can mend that), else what failed (a later step may succeed)."""
        try:
            holder = self.lease.hold(now.mono)
            lines = []
            if (holder is None) is not self.active:
                self.active = holder is None
                lines.append(lease_line(self.pool.session.id, holder))
                log.info("%s", lines[-1])
            if self.active:
                lines += self.monitor.step(now.mono)
                lines += self.autoscaler.step(now.wall)
            return lines
        except AwsError as err:
            session = self.pool.session
            if session.gone(err):
                self.active = False  # its lease went with its tables
                raise SessionNotFound(
                    f"session {session.id} no longer exists on its endpoint "
                    f"({session.info.endpoint_url or 'AWS'}): its tables are gone"
                ) from err
            raise

    def release(self) -> None:
        """Give the lease up if held, so that a standby takes over at once (at a clean stop).
        Never raises: the lease runs out by itself."""
        if not self.active:
            return
        try:
            self.lease.release()
        except AwsError as err:
            log.warning("could not release the lease: %s", err)
        self.active = False
