"""`clobi rm --headless`: the Resource Manager's loops without a screen, logging what they do."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

from resource_manager.autoscaler import Autoscaler
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
    while not stop.is_set():
        began = time.monotonic()
        try:
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
    log.info("resource manager stopped; the session and its VMs keep running")
    return 0
