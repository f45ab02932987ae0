"""The autoscaling policy: pure decisions from a view of the pool, shared by the live
autoscaler and the simulator (no AWS, no clock of its own: `now` is given).

Demand is the queued jobs, each with its cores; supply is the free cores of live VMs (starting
ones count as free). The jobs are packed onto VMs that can hold them, and what is left onto VMs
launched at once, each job in the cheapest cloud (then in config order) whose VMs hold it,
never a VM that holds none of them, within each cloud's max_vms, the
launch rate, the budget (every VM that still runs counts against it, draining ones too) and each
cloud's launch back-off. A VM idle for idle_timeout_s (while no waiting job fits it), or older
than max_vm_lifetime_s, is drained — never killed — and min_vms are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.models import AutoscaleConfig, Ec2Cloud, LocalCloud

MAX_BACKOFF_S = 900.0


@dataclass(frozen=True)
class VmView:
    id: str
    cloud: str
    cores: int
    busy_cores: int
    starting: bool
    started_at: float  # on the policy's clock
    draining: bool = False


@dataclass(frozen=True)
class PoolView:
    vms: tuple[VmView, ...]
    queued_cores: int
    # How many queued jobs ask for each number of cores, as (cores, count) pairs; when left
    # empty, the queued cores are taken for one-core jobs.
    queued_jobs: tuple[tuple[int, int], ...] = ()

    def waiting(self) -> list[tuple[int, int]]:
        """(cores, count) of the queued jobs, the largest first."""
        sizes = self.queued_jobs or ((1, self.queued_cores),)
        return sorted(((c, n) for c, n in sizes if n > 0), reverse=True)


@dataclass(frozen=True)
class Decision:
    action: str  # "launch" or "drain"
    cloud: str
    reason: str
    count: int = 0
    vm: str | None = None

    def describe(self) -> str:
        if self.action == "launch":
            return f"launch {self.count} VM(s) in {self.cloud}: {self.reason}"
        return f"drain {self.vm} ({self.cloud}): {self.reason}"


@dataclass
class Policy:
    config: AutoscaleConfig
    clouds: tuple[LocalCloud | Ec2Cloud, ...]
    _idle_since: dict[str, float] = field(default_factory=dict)
    _launches: list[float] = field(default_factory=list)  # launch times in the last minute
    _backoff_until: dict[str, float] = field(default_factory=dict)
    _backoff_s: dict[str, float] = field(default_factory=dict)
    _planned_cost: float = 0.0  # within one decision: the cost rate with the VMs planned so far

    def order(self) -> list[LocalCloud | Ec2Cloud]:
        """Cheapest first; ties keep the config order."""
        return sorted(self.clouds, key=lambda c: c.cost_per_hour)

    def decide(self, now: float, pool: PoolView) -> list[Decision]:
        live = [vm for vm in pool.vms if not vm.draining]
        decisions = self._scale_down(now, pool, live)
        drained = {d.vm for d in decisions}
        live = [vm for vm in live if vm.id not in drained]
        decisions += self._scale_up(now, pool, live)
        return decisions

    # --- up ---------------------------------------------------------------------------

    def _scale_up(self, now: float, pool: PoolView, live: list[VmView]) -> list[Decision]:
        """Pack the queued jobs onto the free cores of live VMs, then onto VMs to launch: each
        job in the cheapest cloud whose VMs can hold it and that has room left."""
        self._launches = [t for t in self._launches if now - t < 60.0]
        # Every VM that still runs is billed, draining ones (this step's included) too.
        self._planned_cost = sum(self._cost(vm.cloud) for vm in pool.vms)
        free_cores = sum(vm.cores - vm.busy_cores for vm in live)
        bins = [vm.cores - vm.busy_cores for vm in live]
        waiting = [(cores, _fill(bins, cores, count)) for cores, count in pool.waiting()]
        plan: dict[str, list[int]] = {c.name: [] for c in self.clouds}  # free cores per new VM
        for cloud in self.order():
            count_live = sum(1 for vm in live if vm.cloud == cloud.name)
            for _ in range(cloud.min_vms - count_live):
                if not self._open(now, cloud, live, plan):
                    break
        kept = {name: len(new) for name, new in plan.items()}
        for cores, count in waiting:
            self._place(now, cores, count, live, plan)
        decisions = []
        for cloud in self.order():
            new = plan[cloud.name]
            if not new:
                continue
            for_jobs = len(new) > kept[cloud.name] or any(f < cloud.cores_per_vm for f in new)
            reason = (
                f"{pool.queued_cores} queued cores, {free_cores} free"
                if for_jobs
                else f"keep min_vms={cloud.min_vms}"
            )
            decisions.append(Decision("launch", cloud.name, reason, count=len(new)))
        return decisions

    def _place(
        self, now: float, cores: int, count: int, live: list[VmView], plan: dict[str, list[int]]
    ) -> None:
        """Place `count` jobs of `cores` on the VMs planned so far, then on new ones."""
        for new in plan.values():
            count = _fill(new, cores, count)
        while count > 0:
            fits = [c for c in self.order() if c.cores_per_vm >= cores]
            cloud = next((c for c in fits if self._open(now, c, live, plan)), None)
            if cloud is None:
                return  # no cloud can hold them, or none has room left: they wait
            count = _fill(plan[cloud.name], cores, count)

    def _open(
        self,
        now: float,
        cloud: LocalCloud | Ec2Cloud,
        live: list[VmView],
        plan: dict[str, list[int]],
    ) -> bool:
        """Plan one more VM in a cloud if its back-off, max_vms, the launch rate and the
        budget allow it; returns whether it did."""
        if self._backoff_until.get(cloud.name, 0.0) > now:
            return False
        count_live = sum(1 for vm in live if vm.cloud == cloud.name)
        if count_live + len(plan[cloud.name]) >= cloud.max_vms:
            return False
        if len(self._launches) >= self.config.max_launches_per_min:
            return False
        budget = self.config.budget_per_hour
        over = budget is not None and self._planned_cost + cloud.cost_per_hour > budget + 1e-9
        if over and cloud.cost_per_hour > 0:
            return False
        plan[cloud.name].append(cloud.cores_per_vm)
        self._launches.append(now)
        self._planned_cost += cloud.cost_per_hour
        return True

    def launch_failed(self, cloud: str, now: float) -> float:
        """Back a cloud off (doubling, up to 15 minutes); returns the back-off in seconds."""
        backoff = min(
            MAX_BACKOFF_S, self._backoff_s.get(cloud, self.config.launch_backoff_s / 2) * 2
        )
        self._backoff_s[cloud] = backoff
        self._backoff_until[cloud] = now + backoff
        return backoff

    def launch_succeeded(self, cloud: str) -> None:
        self._backoff_s.pop(cloud, None)
        self._backoff_until.pop(cloud, None)

    def backed_off(self, now: float) -> dict[str, float]:
        return {c: until - now for c, until in self._backoff_until.items() if until > now}

    # --- down -------------------------------------------------------------------------

    def _scale_down(self, now: float, pool: PoolView, live: list[VmView]) -> list[Decision]:
        decisions = []
        remaining = {c.name: sum(1 for vm in live if vm.cloud == c.name) for c in self.clouds}
        minimum = {c.name: c.min_vms for c in self.clouds}
        waiting = pool.waiting() if pool.queued_cores else []
        for vm in sorted(live, key=lambda v: -self._cost(v.cloud)):  # dearest first
            if vm.starting:
                continue
            if vm.busy_cores > 0:
                self._idle_since.pop(vm.id, None)
            else:
                self._idle_since.setdefault(vm.id, now)
            lifetime = self.config.max_vm_lifetime_s
            if lifetime is not None and now - vm.started_at >= lifetime:
                decisions.append(
                    Decision("drain", vm.cloud, f"older than {lifetime:g} s", vm=vm.id)
                )
                remaining[vm.cloud] = remaining.get(vm.cloud, 0) - 1
                continue
            idle_s = now - self._idle_since.get(vm.id, now)
            if (
                vm.busy_cores == 0
                and idle_s >= self.config.idle_timeout_s
                and not any(cores <= vm.cores for cores, _ in waiting)  # none it could hold
                and remaining.get(vm.cloud, 0) > minimum.get(vm.cloud, 0)
            ):
                decisions.append(Decision("drain", vm.cloud, f"idle for {idle_s:.0f} s", vm=vm.id))
                remaining[vm.cloud] -= 1
        present = {vm.id for vm in pool.vms}
        for vm_id in [v for v in self._idle_since if v not in present]:
            del self._idle_since[vm_id]
        return decisions

    def _cost(self, cloud: str) -> float:
        for c in self.clouds:
            if c.name == cloud:
                return c.cost_per_hour
        return 0.0


def _fill(bins: list[int], cores: int, count: int) -> int:
    """Place up to `count` jobs of `cores` onto bins of free cores, first fit (the bins are
    updated); returns how many did not fit."""
    for index, free in enumerate(bins):
        if count <= 0:
            break
        placed = min(count, free // cores)
        bins[index] -= placed * cores
        count -= placed
    return count
