"""Whether an agent still takes new jobs: a drain asked in its VM record (seen by the heartbeat,
or read afresh before a claim) or by a spot notice. Once asked, it stays asked."""

from __future__ import annotations

import logging
import time

from shared.vms import VmTable

log = logging.getLogger(__name__)


class DrainFlag:
    def __init__(self, vms: VmTable, vm_id: str, heartbeat_s: float) -> None:
        self.vms = vms
        self.vm_id = vm_id
        self.heartbeat_s = heartbeat_s
        self.requested = False
        self._seen_at = 0.0  # monotonic: when the record's flag was last read

    def saw(self, drain: bool) -> bool:
        """The record's flag, just read; True when it newly asks for a drain."""
        self._seen_at = time.monotonic()
        if not drain or self.requested:
            return False
        log.info("drain requested: taking no new job")
        self.requested = True
        return True

    def check(self, fresh: bool) -> bool:
        """Whether to take no new job. With `fresh` (an agent that just woke from its idle
        long poll) the record is read now, so a VM drained while idle takes no job that
        arrives after the drain; else the last heartbeat's reading is trusted unless it is
        getting old. Raises AwsError."""
        stale = time.monotonic() - self._seen_at > 2 * self.heartbeat_s
        if not self.requested and (fresh or stale):
            record = self.vms.get(self.vm_id)
            self.saw(record is not None and record.drain)
        return self.requested
