"""`clobi rm --headless`: the Resource Manager's steps without a screen, logging what they do."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

from resource_manager.manager import Now, ResourceManager
from resource_manager.pool import Pool
from shared.errors import SessionNotFound

log = logging.getLogger("clobi.rm")


def step_interval_s(lease_s: float) -> float:
    """Often enough to judge leases well within a lease period, rarely enough to cost little."""
    return max(0.5, min(lease_s / 4, 10.0))


def run_headless(pool: Pool, interval_s: float | None = None) -> int:
    """Step until SIGINT/SIGTERM. Blocks; raises SessionNotFound when the session is gone."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    interval = interval_s or step_interval_s(pool.session.info.config.lease_s)
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    log.info("resource manager on session %s: a step every %.1f s", pool.session.id, interval)
    manager = ResourceManager(pool)
    try:
        run_steps(manager, stop, interval)
    finally:
        manager.release()
        for sig, handler in previous.items():  # the caller's own handlers again
            signal.signal(sig, handler)
    log.info("resource manager stopped; the session and its VMs keep running")
    return 0


def run_steps(manager: ResourceManager, stop: threading.Event, interval_s: float) -> None:
    """A step every `interval_s` until `stop` is set; what a step decides is logged by the
    parts that decide it. Raises SessionNotFound."""
    while not stop.is_set():
        now = Now.read()
        try:
            manager.step(now)
        except SessionNotFound:
            raise
        except Exception:  # the loop outlives any single failure
            log.exception("resource manager step failed")
        stop.wait(max(0.0, interval_s - (time.monotonic() - now.mono)))
