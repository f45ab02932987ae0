"""The VM pool of a session across its clouds: start, list, drain (soft kill), kill (hard)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from resource_manager.drivers import CloudDriver, driver_for
from shared import naming
from shared.errors import AwsError, ClobiError, ConfigError, DriverError
from shared.events import SESSION_KEY
from shared.models import Bootstrap
from shared.records import JobState, VmRecord, VmState
from shared.session import Session

log = logging.getLogger(__name__)


class BudgetExceeded(ConfigError):
    """A start would raise the pool's cost rate past budget_per_hour."""


class Pool:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._drivers: dict[str, CloudDriver] = {}
        self.max_vms: dict[str, int] = {}  # overrides of the config's, set in the console

    def driver(self, cloud: str) -> CloudDriver:
        if cloud not in self._drivers:
            self._drivers[cloud] = driver_for(
                self.session.info, self.session.info.config.cloud(cloud)
            )
        return self._drivers[cloud]

    def start(self, cloud: str, count: int = 1, over_budget: bool = False) -> list[str]:
        """Launch `count` VMs in a cloud, within its max_vms and (unless `over_budget`) the
        session's budget_per_hour; returns their ids. Raises ConfigError past a limit."""
        config = self.session.info.config.cloud(cloud)
        vms = self.vms()
        live = [vm for vm in vms if vm.cloud == cloud and vm.state.live]
        max_vms = self.max_vms.get(cloud, config.max_vms)
        if len(live) + count > max_vms:
            raise ConfigError(
                f"cloud {cloud}: {len(live)} VMs live, max_vms is "
                f"{max_vms}: cannot start {count} more"
            )
        budget = self.session.info.config.autoscale.budget_per_hour
        rate, added = self.cost_rate(vms), count * config.cost_per_hour
        if budget is not None and added > 0 and rate + added > budget + 1e-9 and not over_budget:
            raise BudgetExceeded(
                f"cloud {cloud}: {count} more VM(s) would raise the pool's cost rate from "
                f"{rate:.2f}/h to {rate + added:.2f}/h, past budget_per_hour {budget:.2f}/h "
                "(--over-budget starts them anyway)"
            )
        started = []
        for _ in range(count):
            vm_id = naming.new_vm_id(cloud)
            bootstrap = Bootstrap(
                vm_id=vm_id, cloud=cloud, cores=config.cores_per_vm, session=self.session.info
            )
            self.session.vms.put_launched(vm_id, cloud, config.cores_per_vm, None)
            try:
                instance = self.driver(cloud).launch(bootstrap)
            except ClobiError:
                self.session.vms.set_state(vm_id, VmState.FAILED)
                raise
            self.session.vms.set_instance(vm_id, instance)
            started.append(vm_id)
            try:  # a record of the start: the VM runs, and its registry item says so anyway
                self.session.events.append(SESSION_KEY, "vm_started", vm=vm_id, detail=cloud)
            except AwsError as err:  # throttled past boto3's retries, say
                log.warning("%s: started, but its event was not written: %s", vm_id, err)
        return started

    def vms(self) -> list[VmRecord]:
        return self.session.vms.all()

    def cost_rate(self, vms: list[VmRecord] | None = None) -> float:
        """The pool's cost per hour: every VM that still runs counts (starting, running and
        draining alike: a draining VM is billed until it stops)."""
        costs = {c.name: c.cost_per_hour for c in self.session.info.config.clouds}
        vms = self.vms() if vms is None else vms
        return sum(costs.get(vm.cloud, 0.0) for vm in vms if vm.state.live)

    def drain(self, vm_ids: list[str]) -> list[str]:
        """Soft kill: flag the VMs; their agents finish running jobs and power off."""
        drained = []
        for vm_id in vm_ids:
            if self.session.vms.request_drain(vm_id):
                self.session.events.append(SESSION_KEY, "vm_drain", vm=vm_id)
                drained.append(vm_id)
        return drained

    def kill(self, vm_ids: list[str]) -> list[str]:
        """Hard kill: terminate now and, once the cloud says they are gone, requeue their
        jobs at once (no lease to wait out). Blocks; raises DriverError if one survives."""
        known = {vm.id: vm for vm in self.vms()}
        killed = []
        for vm_id in vm_ids:
            vm = known.get(vm_id)
            if vm is None:
                raise ClobiError(f"no VM {vm_id} in this session")
            self.driver(vm.cloud).terminate([vm_id])  # verified: raises if it survived
            self.session.vms.set_state(vm_id, VmState.STOPPED)
            self.session.events.append(SESSION_KEY, "vm_killed", vm=vm_id)
            self.requeue_jobs(vm_id, f"{vm_id} was killed")
            killed.append(vm_id)
        return killed

    def requeue_jobs(self, vm_id: str, why: str) -> dict[str, JobState]:
        """Reap the jobs of a VM known to be gone: back to `queued`, or `failed` (lost_vm)
        with no attempts left. Each reap is fenced by the attempt read here, so a job that
        moved on meanwhile is left alone. Returns the new state of each job reaped."""
        reaped = {}
        for state in (JobState.RUNNING, JobState.SAVING):
            for row in self.session.jobs.by_state(state):
                if row.get("vm") != vm_id:
                    continue
                item = self.session.jobs.get(row["id"])  # the index may lag a renewal
                if item.get("vm") != vm_id or item["state"] not in ("running", "saving"):
                    continue
                attempt, seq = int(item["attempt"]), int(item.get("lease_seq", 0))
                result = self.session.jobs.reap(item["id"], attempt, seq, detail=why)
                if result is not None:
                    log.info("job %s: %s; now %s", item["id"], why, result)
                    reaped[item["id"]] = result
        return reaped

    def terminate_all(self) -> int:
        """Terminate every VM of every configured cloud (at session cleanup); returns how
        many. Every cloud is tried; a cloud that fails is named in the DriverError raised at
        the end."""

        def terminate(driver: CloudDriver) -> int:
            ids = [i.vm_id for i in driver.instances() if i.alive]
            if ids:
                driver.terminate(ids)
            return len(ids)

        return self._each_cloud(terminate)

    def sweep(self) -> int:
        """What the session's VMs left behind in every cloud (at cleanup, after
        `terminate_all`); returns how many resources were deleted. Every cloud is tried."""
        return self._each_cloud(lambda driver: driver.sweep())

    def _each_cloud(self, act: Callable[[CloudDriver], int]) -> int:
        count, failed = 0, []
        for cloud in self.session.info.config.clouds:
            try:
                count += act(self.driver(cloud.name))
            except ClobiError as err:
                failed.append(f"{cloud.name}: {err}")
        if failed:
            raise DriverError("; ".join(failed))
        return count
