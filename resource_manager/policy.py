"""The autoscaling policy: pure decisions from a view of the pool, shared by the live
autoscaler and the simulator (no AWS, no clock of its own: `now` is given).

Demand is the cores of queued jobs plus those of running jobs; supply is the cores of live
VMs (starting ones count as free). When demand exceeds supply, VMs are launched at once for
the whole gap, cheapest cloud first (then in config order), within each cloud's max_vms, the
launch rate, the budget (every VM that still runs counts against it, draining ones too) and each
cloud's launch back-off. A VM idle for idle_timeout_s, or older than max_vm_lifetime_s, is
drained — never killed — and min_vms are kept.
"""

from __future__ import annotations

import math
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
        free = sum(vm.cores - vm.busy_cores for vm in live)
        gap = pool.queued_cores - free
        decisions = []
        self._launches = [t for t in self._launches if now - t < 60.0]
        # Every VM that still runs is billed, draining ones (this step's included) too.
        cost = sum(self._cost(vm.cloud) for vm in pool.vms)
        for cloud in self.order():
            count_live = sum(1 for vm in live if vm.cloud == cloud.name)
            want = max(0, cloud.min_vms - count_live)
            reason = f"keep min_vms={cloud.min_vms}"
            if gap > 0:
                by_demand = math.ceil(gap / cloud.cores_per_vm)
                if by_demand > want:
                    want, reason = by_demand, f"{pool.queued_cores} queued cores, {free} free"
            room = min(
                cloud.max_vms - count_live, self.config.max_launches_per_min - len(self._launches)
            )
            if self.config.budget_per_hour is not None and cloud.cost_per_hour > 0:
                affordable = int((self.config.budget_per_hour - cost) // cloud.cost_per_hour)
                room = min(room, max(0, affordable))
            count = min(want, room)
            if count <= 0 or self._backoff_until.get(cloud.name, 0.0) > now:
                continue
            decisions.append(Decision("launch", cloud.name, reason, count=count))
            self._launches += [now] * count
            cost += count * cloud.cost_per_hour
            gap -= count * cloud.cores_per_vm
        return decisions

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
                and pool.queued_cores == 0
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
