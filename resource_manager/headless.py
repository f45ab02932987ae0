"""`clobi rm --headless`: the Resource Manager's loops without a screen, logging what they do."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

from resource_manager.autoscaler import Autoscaler
from resource_manager.lease import RmLease, lease_line
from resource_manager.monitor import Monitor
from resource_manager.pool import Pool
from shared.errors import AwsError, SessionNotFound

log = logging.getLogger("clobi.rm")


def step_interval_s(lease_s: float) -> float:
    """Often enough to judge leases well within a lease period, rarely enough to cost little."""
    return max(0.5, min(lease_s / 4, 10.0))


def run_headless(pool: Pool, interval_s: float | None = None) -> int:
    """Run the monitor loop until SIGINT/SIGTERM. Blocks."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    monitor = Monitor(pool)
    autoscaler = Autoscaler(pool, monitor)
    interval = interval_s or step_interval_s(pool.session.info.config.lease_s)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log.info("resource manager on session %s: a step every %.1f s", pool.session.id, interval)
    lease = RmLease(pool.session.vms, pool.session.info.config.lease_s)
    active: bool | None = None
    while not stop.is_set():
        began = time.monotonic()
        try:
            holder = lease.hold(began)
            if (holder is None) is not active:
                active = holder is None
                log.info("%s", lease_line(pool.session.id, holder))
            if active:
                monitor.step(began)
                autoscaler.step(time.time())
        except AwsError as err:
            if pool.session.gone(err):
                raise SessionNotFound(
                    f"session {pool.session.id} no longer exists on its endpoint "
                    f"({pool.session.info.endpoint_url or 'AWS'}): its tables are gone"
                ) from err
            log.exception("resource manager step failed")
        except Exception:  # the loop outlives any single failure
            log.exception("resource manager step failed")
        stop.wait(max(0.0, interval - (time.monotonic() - began)))
    if active:
        try:
            lease.release()
        except AwsError as err:
            log.warning("could not release the lease: %s", err)
    log.info("resource manager stopped; the session and its VMs keep running")
    return 0
