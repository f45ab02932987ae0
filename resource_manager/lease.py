"""One active Resource Manager per session: a lease kept in the session's VM table.

The holder renews it (a conditional write that bumps its count) every step; a standby takes
it over, with a write conditioned on the count it saw, once that count has not moved for a
whole lease on its own monotonic clock (so the two machines' clocks never have to agree).
"""

from __future__ import annotations

import os
import socket
import uuid

from shared.vms import VmTable

NAME = "resource-manager"


def holder_name() -> str:
    """Who this process is, as another Resource Manager reports it."""
    # The random part: two containers may share a host name and a pid (1, say).
    return f"{socket.gethostname()} pid {os.getpid()} ({uuid.uuid4().hex[:8]})"


class RmLease:
    def __init__(self, vms: VmTable, lease_s: float, holder: str | None = None) -> None:
        self.vms = vms
        self.lease_s = lease_s
        self.holder = holder or holder_name()
        self._seen: tuple[tuple[str, int] | None, float] | None = None

    def hold(self, mono: float) -> str | None:
        """Take or renew the lease at `mono`, a time.monotonic() reading; None when this
        process holds it, else who does. Idempotent; raises AwsError."""
        current = self.vms.read_lease(NAME)
        if current is None:
            written = self.vms.write_lease(NAME, self.holder, 1, None)
        elif current[0] in (self.holder, ""):  # ours, or given up by a clean stop
            written = self.vms.write_lease(NAME, self.holder, current[1] + 1, current)
        else:
            if self._seen is None or self._seen[0] != current:
                self._seen = (current, mono)
            if mono - self._seen[1] < self.lease_s:
                return current[0]
            written = self.vms.write_lease(NAME, self.holder, current[1] + 1, current)
        if written:
            return None
        again = self.vms.read_lease(NAME)
        return again[0] if again else "another Resource Manager"

    def release(self) -> None:
        """Give the lease up (at a clean stop), so that a standby takes over at once."""
        self.vms.release_lease(NAME, self.holder)


def lease_line(session_id: str, holder: str | None) -> str:
    """What a Resource Manager says when it becomes active, or a standby of `holder`."""
    if holder is None:
        return f"active resource manager of session {session_id}"
    return (
        f"standby: session {session_id} is managed by {holder}; taking over if it stops "
        "renewing its lease"
    )
