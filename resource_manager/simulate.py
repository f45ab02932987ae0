"""`clobi simulate`: the autoscaling policy against a job trace on a simulated clock, no AWS.

The same `Policy` as the live autoscaler decides every `autoscale.step_s` simulated seconds;
VMs boot in their cloud's `boot_s`; queued jobs start on free slots, highest priority first,
then in arrival order (a job no ready VM can hold blocks no other); a job no cloud can hold is
refused, as a submit refuses it. Deterministic: the same trace and config give the same report.
Two naive baselines run on the same machinery: a fixed pool of max_vms, and one VM per job.
"""

from __future__ import annotations

import csv
import heapq
import itertools
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from resource_manager.policy import Decision, Policy, PoolView, VmView
from shared.errors import ConfigError
from shared.models import Ec2Cloud, LocalCloud, SessionConfig


@dataclass(frozen=True)
class Job:
    arrival_s: float
    runtime_s: float
    cores: int
    priority: int


class Deciding(Protocol):
    def decide(self, now: float, pool: PoolView) -> list[Decision]: ...


def read_trace(path: Path) -> list[Job]:
    """CSV with a header: arrival_s, runtime_s, cores, priority (cores and priority optional)."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a CSV file: not UTF-8 (byte {err.start})") from None
    jobs = []
    for number, row in enumerate(rows, start=2):
        try:
            jobs.append(
                Job(
                    float(row["arrival_s"]),
                    float(row["runtime_s"]),
                    int(row.get("cores") or 1),
                    int(row.get("priority") or 1),
                )
            )
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"{path}:{number}: expected arrival_s,runtime_s,cores,priority"
            ) from None
    return sorted(jobs, key=lambda j: j.arrival_s)


@dataclass
class _Vm:
    id: str
    cloud: LocalCloud | Ec2Cloud
    launched_at: float
    up_at: float
    busy: int = 0
    draining: bool = False
    stopped_at: float | None = None
    idle_s: float = 0.0
    _idle_mark: float | None = None

    def set_busy(self, now: float, busy: int) -> None:
        if self._idle_mark is not None:
            self.idle_s += now - self._idle_mark
            self._idle_mark = None
        self.busy = busy
        if busy == 0 and self.stopped_at is None and now >= self.up_at:
            self._idle_mark = now


@dataclass
class Simulation:
    config: SessionConfig
    jobs: list[Job]
    policy: Deciding
    vms: dict[str, _Vm] = field(default_factory=dict)
    live: dict[str, _Vm] = field(default_factory=dict)  # not stopped yet
    queue: dict[int, dict[int, deque[int]]] = field(default_factory=dict)  # priority, cores
    refused: list[int] = field(default_factory=list)  # jobs no cloud can hold
    started: dict[int, float] = field(default_factory=dict)
    finished: dict[int, float] = field(default_factory=dict)
    _events: list[tuple[float, int, str, Any]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _names: itertools.count[int] = field(default_factory=itertools.count)
    _queued_cores: int = 0
    _queued_sizes: Counter[int] = field(default_factory=Counter)

    def push(self, at: float, kind: str, payload: Any) -> None:
        heapq.heappush(self._events, (at, next(self._seq), kind, payload))

    def run(self) -> dict[str, Any]:
        step = self.config.autoscale.step_s
        for index, job in enumerate(self.jobs):
            self.push(job.arrival_s, "arrive", index)
        self.push(0.0, "tick", None)
        now = 0.0
        while self._events:
            now, _, kind, payload = heapq.heappop(self._events)
            if kind == "arrive":
                self._arrive(payload)
            elif kind == "finish":
                index, vm = payload
                self.finished[index] = now
                vm.set_busy(now, vm.busy - self.jobs[index].cores)
                if vm.draining and vm.busy == 0:
                    self._stop(vm, now)
            elif kind == "boot":
                payload.set_busy(now, payload.busy)  # idle time counts from now
            elif kind == "tick":
                self._apply(now, self.policy.decide(now, self._view(now)))
                if self._more_ticks(now):
                    self.push(now + step, "tick", None)
            self._schedule(now)
        # What is still up when the work is done is released by hand at the last finish
        # (generous to the fixed pool); the policy drained its own VMs before that.
        end = max(self.finished.values(), default=now)
        for vm in self.vms.values():
            if vm.stopped_at is None:
                self._stop(vm, max(end, vm.launched_at))
        return self._report(end)

    def _arrive(self, index: int) -> None:
        job = self.jobs[index]
        largest = max((c.cores_per_vm for c in self.config.clouds if c.max_vms > 0), default=0)
        if job.cores > largest:
            self.refused.append(index)  # as a submit refuses it: no cloud can hold it
            return
        self.queue.setdefault(job.priority, {}).setdefault(job.cores, deque()).append(index)
        self._queued_cores += job.cores
        self._queued_sizes[job.cores] += 1

    def _more_ticks(self, now: float) -> bool:
        if len(self.finished) + len(self.refused) < len(self.jobs):
            return True
        grace = self.config.autoscale.idle_timeout_s + 2 * self.config.autoscale.step_s
        return self._live_above_min() and now < max(self.finished.values(), default=0) + grace

    def _view(self, now: float) -> PoolView:
        queued = self._queued_cores
        vms = tuple(
            VmView(
                vm.id,
                vm.cloud.name,
                vm.cloud.cores_per_vm,
                vm.busy,
                now < vm.up_at,
                vm.launched_at,
                vm.draining,
            )
            for vm in self.live.values()
        )
        return PoolView(vms, queued, tuple(sorted(self._queued_sizes.items())))

    def _live_above_min(self) -> bool:
        return len(self.live) > sum(c.min_vms for c in self.config.clouds)

    def _apply(self, now: float, decisions: list[Decision]) -> None:
        clouds = {c.name: c for c in self.config.clouds}
        for decision in decisions:
            if decision.action == "launch":
                for _ in range(decision.count):
                    cloud = clouds[decision.cloud]
                    vm = _Vm(f"{cloud.name}-{next(self._names)}", cloud, now, now + cloud.boot_s)
                    self.vms[vm.id] = self.live[vm.id] = vm
                    self.push(vm.up_at, "boot", vm)
            elif decision.vm in self.vms:
                vm = self.vms[decision.vm]
                vm.draining = True
                if vm.busy == 0:
                    self._stop(vm, now)

    def _stop(self, vm: _Vm, now: float) -> None:
        vm.set_busy(now, vm.busy)
        vm._idle_mark = None
        vm.stopped_at = now
        self.live.pop(vm.id, None)

    def _schedule(self, now: float) -> None:
        if not self._queued_cores:
            return
        ready = [
            vm
            for vm in self.live.values()
            if not vm.draining and now >= vm.up_at and vm.busy < vm.cloud.cores_per_vm
        ]
        if not ready:
            return
        for priority in sorted(self.queue, reverse=True):
            by_cores = self.queue[priority]  # by cores: a job no ready VM can hold blocks no other
            while ready:
                fitting = [
                    (waiting[0], cores)
                    for cores, waiting in by_cores.items()
                    if waiting and any(v.cloud.cores_per_vm - v.busy >= cores for v in ready)
                ]
                if not fitting:
                    break
                index, cores = min(fitting)  # the earliest arrival among those that fit
                vm = next(v for v in ready if v.cloud.cores_per_vm - v.busy >= cores)
                by_cores[cores].popleft()
                self._queued_cores -= cores
                self._queued_sizes[cores] -= 1
                self.started[index] = now
                vm.set_busy(now, vm.busy + cores)
                self.push(now + self.jobs[index].runtime_s, "finish", (index, vm))
                if vm.busy >= vm.cloud.cores_per_vm:
                    ready.remove(vm)

    def _report(self, end: float) -> dict[str, Any]:
        waits = sorted(self.started[i] - self.jobs[i].arrival_s for i in self.started)
        first = self.jobs[0].arrival_s if self.jobs else 0.0
        last = max(self.finished.values(), default=first)
        clouds: dict[str, dict[str, float]] = {}
        for vm in self.vms.values():
            hours = ((vm.stopped_at or end) - vm.launched_at) / 3600
            entry = clouds.setdefault(
                vm.cloud.name, {"vms": 0, "vm_hours": 0.0, "cost": 0.0, "idle_vm_hours": 0.0}
            )
            entry["vms"] += 1
            entry["vm_hours"] += hours
            entry["cost"] += hours * vm.cloud.cost_per_hour
            entry["idle_vm_hours"] += vm.idle_s / 3600
        return {
            "jobs": len(self.jobs),
            "finished": len(self.finished),
            "refused": len(self.refused),
            "launches": len(self.vms),
            "makespan_s": last - first,
            "mean_wait_s": sum(waits) / len(waits) if waits else 0.0,
            "p95_wait_s": waits[min(len(waits) - 1, round(0.95 * (len(waits) - 1)))]
            if waits
            else 0.0,
            "vm_hours": sum(c["vm_hours"] for c in clouds.values()),
            "cost": sum(c["cost"] for c in clouds.values()),
            "idle_vm_hours": sum(c["idle_vm_hours"] for c in clouds.values()),
            "clouds": clouds,
        }


class FixedPool:
    """Baseline: every cloud's max_vms, started at once and kept for the whole run."""

    def __init__(self, config: SessionConfig) -> None:
        self._clouds = config.clouds
        self._done = False

    def decide(self, now: float, pool: PoolView) -> list[Decision]:
        if self._done:
            return []
        self._done = True
        return [Decision("launch", c.name, "fixed pool", count=c.max_vms) for c in self._clouds]


class VmPerJob:
    """Baseline: one VM per queued job (within max_vms) in the cheapest cloud that can hold
    it, drained as soon as it is idle."""

    def __init__(self, config: SessionConfig) -> None:
        self._clouds = sorted(config.clouds, key=lambda c: c.cost_per_hour)

    def decide(self, now: float, pool: PoolView) -> list[Decision]:
        decisions = [
            Decision("drain", vm.cloud, "idle", vm=vm.id)
            for vm in pool.vms
            if not vm.starting and not vm.draining and vm.busy_cores == 0
        ]
        waiting = [[cores, count] for cores, count in pool.waiting()] if pool.queued_cores else []
        for vm in pool.vms:  # a starting VM is the one of a job it can hold
            entry = next((w for w in waiting if vm.starting and w[1] and w[0] <= vm.cores), None)
            if entry is not None:
                entry[1] -= 1
        room = {
            c.name: c.max_vms - sum(1 for vm in pool.vms if vm.cloud == c.name and not vm.draining)
            for c in self._clouds
        }
        launch: Counter[str] = Counter()
        for cores, count in waiting:
            for cloud in (c for c in self._clouds if c.cores_per_vm >= cores):
                take = max(0, min(count, room[cloud.name]))
                launch[cloud.name] += take
                room[cloud.name] -= take
                count -= take
        decisions += [
            Decision("launch", cloud, "a VM per job", count=count)
            for cloud, count in launch.items()
            if count > 0
        ]
        return decisions


def _clobi(config: SessionConfig) -> Deciding:
    return Policy(config.autoscale, config.clouds)


POLICIES: dict[str, Callable[[SessionConfig], Deciding]] = {
    "clobi": _clobi,
    "fixed": FixedPool,
    "per-job": VmPerJob,
}


def simulate(config: SessionConfig, jobs: list[Job], policy: str = "clobi") -> dict[str, Any]:
    if not config.clouds:
        raise ConfigError("the config has no [[clouds]] to simulate")
    return Simulation(config, jobs, POLICIES[policy](config)).run()
