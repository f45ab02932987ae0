"""The monitor and reaper loop of the Resource Manager (docs/design.md), driven by `step(now)`.

Leases are judged on the monitor's own monotonic clock: a running job whose (attempt, lease_seq)
has not changed for a full lease period is reaped, whatever the agents' clocks say; a job of a
VM the registry says is stopped or failed, and that its cloud no longer lists, is reaped at once.
Nothing is kept between runs but what DynamoDB holds, so a restarted Resource Manager resumes the
session as it is (it only waits one more lease period before judging the other leases).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from resource_manager.pool import Pool
from shared.dispatch import Dispatcher
from shared.errors import AwsError
from shared.events import SESSION_KEY
from shared.records import JobState, Reason, VmRecord, VmState
from shared.timings import LEFTOVERS_EVERY_S, LISTED_WITHIN_S
from shared.transitions import SENT

log = logging.getLogger(__name__)


@dataclass
class PoolSnapshot:
    """What the monitor saw at its last step; read by the console and the autoscaler."""

    at: float = 0.0
    vms: list[VmRecord] = field(default_factory=list)
    jobs: Counter[str] = field(default_factory=Counter)
    queue_depths: dict[str, int] = field(default_factory=dict)
    decisions: list[str] = field(default_factory=list)
    busy_cores: Counter[str] = field(default_factory=Counter)  # per VM, of running jobs
    queue_in_flight: dict[str, int] = field(default_factory=dict)  # received, not deleted
    running: dict[str, str] = field(default_factory=dict)  # running job id -> its VM


class Monitor:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.session = pool.session
        self.config = self.session.info.config
        self.redispatch_after_s = self.config.resend_s
        self.dispatcher = Dispatcher(self.session)
        self.snapshot = PoolSnapshot()
        self.lock = threading.Lock()
        # key -> (observed value, monotonic time it was first seen with that value)
        self._leases: dict[str, tuple[Any, float]] = {}
        self._vm_beats: dict[str, tuple[Any, float]] = {}
        self._sent: dict[str, tuple[Any, float]] = {}
        self._running: dict[str, str] = {}
        self._gone: dict[str, VmState] = {}  # stopped or failed, and not alive in its cloud
        self._started = False
        self._next_leftovers = 0.0
        self._finished: Counter[JobState] = Counter()  # counted by the last step's VM scan

    def step(self, mono: float) -> list[str]:
        """One pass at `mono`, a time.monotonic() reading (every interval the monitor judges
        is on this clock): VMs, leases, lost messages, the dispatch window. Returns its
        decisions."""
        decisions: list[str] = []
        if not self._started:
            self._refuse_too_big(decisions)
            self._started = True
        vms = self._check_vms(mono, decisions)
        self._release_leftovers(mono, vms, decisions)
        counts, busy = self._reap(mono, decisions)
        counts = self._every_state(counts)
        # Jobs put back to pending are in priorities the dispatcher may remember as empty.
        redispatched = self._redispatch(mono, decisions)
        sent = self.dispatcher.fill(every_priority=redispatched, clock=mono)
        if sent:
            decisions.append(f"released {sent} job messages into the queues")
        depths, in_flight = self.session.queues.depths()
        with self.lock:
            self.snapshot = PoolSnapshot(
                mono, vms, counts, depths, decisions, busy, in_flight, self._running
            )
        for decision in decisions:
            log.info("%s", decision)
        log.debug(
            "step: %d VMs, jobs %s, queue depths %s, in flight %s, cores busy %s",
            len(vms),
            dict(counts),
            depths,
            dict(in_flight),
            busy,
        )
        return decisions

    # --- VMs ----------------------------------------------------------------------------

    def _check_vms(self, now: float, decisions: list[str]) -> list[VmRecord]:
        alive = self._alive_in_clouds()
        self._finished = Counter()
        vms = self.session.vms.all(finished=self._finished)  # one scan: VMs and job counts
        self._terminate_orphans(alive, {vm.id for vm in vms}, decisions)
        self._gone = {}
        for vm in vms:
            if vm.state in (VmState.STOPPED, VmState.FAILED):
                self._vm_beats.pop(vm.id, None)
                if vm.cloud in alive and vm.id not in alive[vm.cloud]:
                    self._gone[vm.id] = vm.state  # its jobs can be reaped without a lease
                elif vm.id in alive.get(vm.cloud, set()):
                    self._terminate_dead_record(vm, decisions)
                continue
            beat = (vm.state, vm.last_heartbeat_at)
            seen, since = self._vm_beats.get(vm.id, (None, now))
            if seen != beat:
                self._vm_beats[vm.id] = (beat, now)
                since = now
            limit = (
                self.config.register_timeout_s
                if vm.state is VmState.STARTING
                else self.config.vm_timeout_s
            )
            # A launch still in flight has no instance yet, and a cloud may not list a VM it
            # has just launched (EC2's eventual consistency): not gone, only not listed yet.
            listed = vm.state is not VmState.STARTING or (
                vm.instance_id is not None and now - since >= LISTED_WITHIN_S
            )
            gone = listed and vm.cloud in alive and vm.id not in alive[vm.cloud]
            if now - since >= limit or (gone and now - since >= self.config.heartbeat_s * 3):
                why = (
                    "VM is gone from its cloud"
                    if gone
                    else (
                        "VM never registered"
                        if vm.state is VmState.STARTING
                        else "VM stopped heartbeating"
                    )
                )
                self._fail_vm(vm, why, decisions)
        return vms

    def _every_state(self, active: Counter[str]) -> Counter[str]:
        """Jobs per state: running and saving as the reaper just read them, the finished from
        their counts (shared/tallies.py), queued what is left of every job submitted; never
        an index of every finished job."""
        counts = Counter(active)
        try:
            submitted = sum(self.session.events.submissions().values())
        except AwsError as err:  # counts are for display only
            log.warning("cannot count the jobs: %s", err)
            return counts
        counts.update({str(state): n for state, n in self._finished.items()})
        counts[str(JobState.QUEUED)] = max(0, submitted - sum(counts.values()))
        return counts

    def _release_leftovers(self, mono: float, vms: list[VmRecord], decisions: list[str]) -> None:
        """Now and then, have each cloud delete what VMs that are not live left behind."""
        if mono < self._next_leftovers:
            return
        self._next_leftovers = mono + LEFTOVERS_EVERY_S
        live = {vm.id for vm in vms if vm.state.live}
        for cloud in self.config.clouds:
            try:
                deleted = self.pool.driver(cloud.name).release_leftovers(live)
            except Exception as err:  # tried again later
                log.warning("releasing leftovers in %s failed: %s", cloud.name, err)
                continue
            if deleted:
                decisions.append(
                    f"deleted what stopped VMs left in {cloud.name}: {', '.join(deleted)}"
                )

    def _terminate_dead_record(self, vm: VmRecord, decisions: list[str]) -> None:
        """A VM the registry says stopped or failed that its cloud still runs (a terminate
        that failed, a power-off that did not happen): it bills and may take jobs. End it."""
        try:
            self.pool.driver(vm.cloud).terminate([vm.id])
        except Exception as err:  # tried again next step
            log.warning("terminating %s (%s, still running) failed: %s", vm.id, vm.state, err)
            return
        decisions.append(f"{vm.id}: {vm.state} but still running in its cloud; terminated")

    def _alive_in_clouds(self) -> dict[str, set[str]]:
        """Live VM ids per cloud; a cloud that cannot be listed is left out."""
        alive: dict[str, set[str]] = {}
        for cloud in self.config.clouds:
            try:
                instances = self.pool.driver(cloud.name).instances()
            except Exception as err:  # one cloud's trouble must not stop the loop
                log.warning("cannot list cloud %s: %s", cloud.name, err)
                continue
            alive[cloud.name] = {i.vm_id for i in instances if i.alive}
        return alive

    def _terminate_orphans(
        self, alive: dict[str, set[str]], known: set[str], decisions: list[str]
    ) -> None:
        # The clouds were listed before the registry was read, and a VM is registered before
        # it is launched: so a live VM missing from the registry really is an orphan.
        for cloud, vm_ids in alive.items():
            orphans = sorted(vm_ids - known)
            if not orphans:
                continue
            try:
                self.pool.driver(cloud).terminate(orphans)
            except Exception as err:
                log.warning("terminating orphans in %s failed: %s", cloud, err)
                continue
            decisions.append(f"terminated orphan VMs in {cloud}: {', '.join(orphans)}")

    def _fail_vm(self, vm: VmRecord, why: str, decisions: list[str]) -> None:
        try:
            self.pool.driver(vm.cloud).terminate([vm.id])
            terminated = True
        except Exception as err:
            log.warning("terminating %s failed: %s", vm.id, err)
            terminated = False
        if self.session.vms.set_state(vm.id, VmState.FAILED, expect=vm.state):
            self.session.events.append(SESSION_KEY, "vm_failed", vm=vm.id, detail=why)
            decisions.append(f"{vm.id}: {why}; marked failed and terminated")
        self._vm_beats.pop(vm.id, None)
        if terminated:  # verified gone: its jobs need not wait out their leases
            for job_id, state in self.pool.requeue_jobs(vm.id, f"{vm.id} failed: {why}").items():
                decisions.append(f"job {job_id}: {vm.id} failed; now {state}")

    # --- jobs -----------------------------------------------------------------------------

    def _reap(self, now: float, decisions: list[str]) -> tuple[Counter[str], Counter[str]]:
        counts: Counter[str] = Counter()
        busy: Counter[str] = Counter()
        running: dict[str, str] = {}
        live: set[str] = set()
        for state in (JobState.RUNNING, JobState.SAVING):
            for item in self.session.jobs.by_state(state):
                counts[str(state)] += 1
                busy[str(item.get("vm"))] += int(item.get("cores", 1))
                running[item["id"]] = str(item.get("vm"))
                job_id = item["id"]
                live.add(job_id)
                lease = (int(item["attempt"]), int(item.get("lease_seq", 0)))
                seen, since = self._leases.get(job_id, (None, now))
                vm_gone = self._gone.get(str(item.get("vm")))
                if vm_gone is not None:  # e.g. a VM killed while no Resource Manager ran
                    why = f"{item.get('vm')} is {vm_gone}"
                elif seen != lease:
                    self._leases[job_id] = (lease, now)
                    continue
                elif now - since < self.config.lease_s:
                    continue
                else:
                    why = f"lease of {item.get('vm')} expired"
                result = self.session.jobs.reap(job_id, lease[0], lease[1], detail=why)
                self._leases.pop(job_id, None)
                if result is not None:
                    decisions.append(f"job {job_id}: {why}; now {result}")
        for job_id in set(self._leases) - live:
            del self._leases[job_id]
        self._running = running
        return counts, busy

    def _refuse_too_big(self, decisions: list[str]) -> None:
        """Fail the queued jobs no VM of the configured clouds can hold. A submit refuses
        them, so they are there only if the clouds changed since: checked once, at start."""
        largest = max((c.cores_per_vm for c in self.config.clouds), default=0)
        for item in self.session.jobs.by_state(JobState.QUEUED):
            cores = int(item.get("cores", 1))
            if cores <= largest:
                continue
            why = f"{cores} cores asked, but the largest VM of the session's clouds has {largest}"
            if self.session.jobs.refuse(item["id"], Reason.TOO_BIG, why):
                decisions.append(f"job {item['id']}: failed, {why}")

    def _redispatch(self, now: float, decisions: list[str]) -> bool:
        """Put back to pending the sent jobs whose message went unclaimed for resend_s;
        returns whether it put back any."""
        current: set[str] = set()
        again = False
        for item in self.session.jobs.by_dispatch(SENT):
            job_id = item["id"]
            current.add(job_id)
            marker = item.get("dispatched_at")
            seen, since = self._sent.get(job_id, (None, now))
            if seen != marker:
                self._sent[job_id] = (marker, now)
                continue
            if now - since >= self.redispatch_after_s and self.session.jobs.mark_pending(
                job_id, int(item["priority"]), marker
            ):
                decisions.append(
                    f"job {job_id}: message not claimed in "
                    f"{self.redispatch_after_s:.0f} s; sending it again"
                )
                self._sent.pop(job_id, None)
                again = True
        for job_id in set(self._sent) - current:
            del self._sent[job_id]
        return again
