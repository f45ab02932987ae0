"""The live autoscaler: the policy of `policy.py` applied to the session every step.

It reads the pool from the monitor's snapshot, the queued demand from the job table (stopping
once it exceeds what the clouds could ever run), launches and drains through the Pool, backs a
failing cloud off so the others take the load, and records every decision as an event.
"""

from __future__ import annotations

import logging
from collections import Counter

from resource_manager.monitor import Monitor
from resource_manager.policy import Decision, Policy, PoolView, VmView
from resource_manager.pool import Pool
from shared.errors import ClobiError
from shared.events import SESSION_KEY
from shared.records import VmState
from shared.transitions import SENT, pending_key

log = logging.getLogger(__name__)
SETTING = "autoscale"


def autoscale_enabled(pool: Pool) -> bool:
    """The runtime switch (`clobi autoscale on|off`), else the session config's."""
    value = pool.session.vms.setting(SETTING)
    return pool.session.info.config.autoscale.enabled if value is None else value


class Autoscaler:
    def __init__(self, pool: Pool, monitor: Monitor) -> None:
        self.pool = pool
        self.monitor = monitor
        self.config = pool.session.info.config
        self.policy = Policy(self.config.autoscale, self.config.clouds)

    def set_max(self, cloud: str, max_vms: int) -> None:
        """Change a cloud's max_vms for this Resource Manager's run."""
        self.policy.clouds = tuple(
            c.model_copy(update={"max_vms": max_vms}) if c.name == cloud else c
            for c in self.policy.clouds
        )

    def step(self, wall: float) -> list[str]:
        """One decision round at `wall`, a time.time() reading: VM ages are compared with
        their recorded start, so they survive a restart. Returns what it did, as lines for
        the log."""
        if not autoscale_enabled(self.pool):
            return []
        done: list[str] = []
        for _ in range(len(self.config.clouds) + 1):  # after a failed launch, decide again
            decisions = self.policy.decide(wall, self._view(wall))
            if not decisions:
                break
            failed = False
            for decision in decisions:
                failed |= not self._apply(decision, wall, done)
            if not failed:
                break
        return done

    def _apply(self, decision: Decision, wall: float, done: list[str]) -> bool:
        try:
            if decision.action == "launch":
                self.pool.start(decision.cloud, decision.count)
                self.policy.launch_succeeded(decision.cloud)
            else:
                assert decision.vm is not None
                self.pool.drain([decision.vm])
        except ClobiError as err:
            backoff = self.policy.launch_failed(decision.cloud, wall)
            line = (
                f"{decision.describe()} failed: {err}; backing {decision.cloud} off for "
                f"{backoff:.0f} s"
            )
            self._record(line, done)
            return False
        self._record(decision.describe(), done)
        return True

    def _record(self, line: str, done: list[str]) -> None:
        log.info("autoscale: %s", line)
        done.append(f"autoscale: {line}")
        self.pool.session.events.append(SESSION_KEY, "autoscale", detail=line[:500])

    def _view(self, wall: float) -> PoolView:
        snapshot = self.monitor.snapshot
        vms = []
        for vm in self.pool.vms():
            if not vm.state.live:
                continue
            started = vm.started_at.timestamp() if vm.started_at else wall
            vms.append(
                VmView(
                    vm.id,
                    vm.cloud,
                    vm.cores,
                    snapshot.busy_cores.get(vm.id, 0),
                    vm.state is VmState.STARTING,
                    started,
                    vm.state is VmState.DRAINING or vm.drain,
                )
            )
        total, sizes = self._queued()
        return PoolView(tuple(vms), total, tuple(sorted(sizes.items())))

    def _queued(self) -> tuple[int, Counter[int]]:
        """Cores of queued jobs, and how many jobs ask for each number of cores; counted
        only as far as the clouds could ever run."""
        ceiling = sum(c.max_vms * c.cores_per_vm for c in self.config.clouds)
        total, sizes = 0, Counter[int]()
        keys = [pending_key(p) for p in range(1, self.config.priorities + 1)] + [SENT]
        for key in keys:
            for item in self.pool.session.jobs.by_dispatch(key):
                cores = int(item.get("cores", 1))
                total += cores
                sizes[cores] += 1
                if total > ceiling:
                    return total, sizes
        return total, sizes
