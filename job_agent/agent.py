"""The agent loop, a few named steps: wait for free slots, take the next messages (where from:
polling.py), claim what fits and start it, hand back the rest. Messages are hints: a claim is a
conditional write in DynamoDB, and only a message done with is deleted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from job_agent.attempt import Attempt, SandboxCache
from job_agent.boot import spot_interrupted
from job_agent.drain import DrainFlag
from job_agent.identity import SlotUsers
from job_agent.polling import Polling
from job_agent.releases import release_volumes
from job_agent.volumes import VolumeProvider
from shared import naming
from shared.aws import Aws, translated
from shared.errors import AwsError, InvalidJob, JobNotFound
from shared.message import JobMessage, decode
from shared.models import Bootstrap
from shared.queues import Received
from shared.records import JobTask, Reason, VmState
from shared.session import Session
from shared.taskrules import task_problem
from shared.timings import IDLE_WAIT_S, NO_FIT_DELAY_S

log = logging.getLogger(__name__)


class JobAgent:
    def __init__(
        self,
        bootstrap: Bootstrap,
        root: Path,
        *,
        idle_wait_s: int = IDLE_WAIT_S,
        volumes: VolumeProvider | None = None,
        power_off: Callable[[], None] | None = None,
        watch_spot: bool = False,
    ) -> None:
        self.vm_id = bootstrap.vm_id
        self.cloud = bootstrap.cloud
        self.cores = bootstrap.cores
        info = bootstrap.session
        cloud = next((c for c in info.config.clouds if c.name == bootstrap.cloud), None)
        profile = getattr(cloud, "aws_profile", None)  # a local cloud's, as EC2's instance one
        self.session = Session(info, Aws(info.region, info.endpoint_url, profile=profile))
        self.config = bootstrap.session.config
        self.root = root
        self.volumes = volumes or release_volumes(bootstrap, self.session.aws, root)
        self.sandboxes = SandboxCache(self.session, root / "cache")
        self.slot_users = SlotUsers(self.config.job_user_on(self.cloud), self.cores)
        self.polling = Polling(self.session, idle_wait_s)
        self.drain = DrainFlag(self.session.vms, self.vm_id, self.config.heartbeat_s)
        self.stopping = threading.Event()
        self._power_off = power_off
        self._watch_spot = watch_spot
        self._shut_down = False
        self.session_gone = False
        self._lock = threading.Lock()
        self._slot_freed = threading.Event()
        self._attempts: dict[str, tuple[Attempt, threading.Thread]] = {}

    # --- lifecycle -------------------------------------------------------------------------

    def run(self) -> None:
        """Register, work until drained or stopped, then leave cleanly. Blocks."""
        self.drain.requested = self.session.vms.register(self.vm_id, self.cloud, self.cores)
        log.info("agent %s up: %d cores, session %s", self.vm_id, self.cores, self.session.id)
        for loop in (self._heartbeat_loop, self._fencing_loop):
            threading.Thread(target=loop, name=loop.__name__[1:], daemon=True).start()
        while not self.stopping.is_set():
            try:
                self.step()
            except AwsError as err:
                log.warning("poll failed: %s", err)
                if self._session_gone(err):
                    break
                self.stopping.wait(1.0)
        self._shutdown()

    def _session_gone(self, err: AwsError) -> bool:
        """A VM whose session no longer exists would poll forever: it kills its jobs (there
        is nothing left to record them in) and powers off."""
        try:
            gone = self.session.gone(err)
        except AwsError:
            return False
        if gone:
            log.error("session %s no longer exists on its endpoint: powering off", self.session.id)
            self.session_gone = True
            self.stop(Reason.LOST_VM)
        return gone

    def stop(self, reason: Reason | None = None) -> None:
        """Leave now; with a reason, running jobs are killed and recorded with it. No job is
        claimed from here on (a signal may arrive in the middle of a step)."""
        self.stopping.set()
        if reason is not None:
            for attempt in self.running():
                attempt.kill(reason)

    def _shutdown(self) -> None:
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
        self.session.queues.flush(now=True)
        for _, thread in list(self._attempts.values()):
            thread.join()
        self.volumes.unmount_all()
        try:
            self.session.vms.set_state(self.vm_id, VmState.STOPPED)
        except AwsError as err:
            log.warning("could not record the VM as stopped: %s", err)
        log.info("agent %s stopped", self.vm_id)
        self._upload_log()

    def _upload_log(self) -> None:
        path = self.root / "agent.log"
        if not path.exists():
            return
        info = self.session.info
        try:
            with translated("upload agent log"):
                self.session.aws.upload(
                    path, info.bucket, naming.agent_log_key(info.prefix, self.vm_id)
                )
        except AwsError as err:
            log.warning("%s", err)

    # --- the loop --------------------------------------------------------------------------

    def running(self) -> list[Attempt]:
        with self._lock:
            return [attempt for attempt, _ in self._attempts.values()]

    def free_slots(self) -> int:
        with self._lock:
            return self.cores - sum(a.task.cores for a, _ in self._attempts.values())

    def step(self) -> None:
        """One turn: wait for free slots, take the next messages, claim what fits and start
        it, hand back the rest. Raises AwsError."""
        self.session.queues.flush()
        free = self.wait_for_free_slots()
        if not free:
            return
        batch = self.polling.next_messages(free, busy=bool(self.running()))
        if batch is None:
            return
        if self.stopping.is_set() or self.drain.check(fresh=batch.woke):  # since the wait
            self.session.queues.hand_back(batch.messages)
            return
        self.claim(batch.messages)

    def wait_for_free_slots(self) -> int:
        """The free slots; 0 after waiting up to a second for a job to end when there are
        none, or when this agent takes no new job (drained and no job left: it stops)."""
        if not self.drain.requested:
            free = self.free_slots()
            if free > 0:
                return free
        elif not self.running():
            log.info("drained: no job left, powering off")
            self.stopping.set()
            return 0
        self._slot_freed.wait(1.0)
        self._slot_freed.clear()
        return 0

    def claim(self, messages: list[Received]) -> None:
        """Take each message in turn; once the agent stops taking jobs, the rest go back at
        once. The messages done with are acknowledged."""
        done = []
        for index, (queue, message) in enumerate(messages):
            if self.stopping.is_set() or self.drain.requested:
                self.session.queues.hand_back(messages[index:])
                break
            if self._take(queue, message):
                done.append((queue, message))
        self.session.queues.acknowledge(done)

    def _take(self, queue: str, message: dict[str, Any]) -> bool:
        """Claim and start one message's job; True when the message is done with (to be
        deleted), False when it went back to its queue."""
        hint = self._read(message)
        if hint is None:
            return True
        if hint.cores > self.free_slots():
            # Not enough free slots here: hand it back unclaimed, for this or another agent.
            self.session.queues.hand_back([(queue, message)], delay_s=NO_FIT_DELAY_S)
            return False
        task = self._claim_job(hint, message)
        if task is not None:
            self.start(task)
        return True

    def _read(self, message: dict[str, Any]) -> JobMessage | None:
        """The job a message hints at; None for a wake-up (every queue is asked next) and
        for a message that is not a job of this session (dead-lettered)."""
        try:
            hint = decode(message["Body"])
            if hint is None:
                self.polling.every_queue_next()
                return None
            if hint.session != self.session.id:
                raise ValueError(f"message of another session ({hint.session})")
        except ValueError as err:
            self.session.queues.dead_letter(message, str(err))
            return None
        return hint

    def _claim_job(self, hint: JobMessage, message: dict[str, Any]) -> JobTask | None:
        """The claimed task, or None: someone else has the job (a stale or duplicate hint),
        or it is ours but not to be run (failed, never retried) or unknown (dead-lettered)."""
        try:
            task = self.session.jobs.claim(hint.job_id, hint.attempt, self.vm_id)
            problem = task_problem(task, self.session.info) if task else None
        except InvalidJob as err:
            task, problem = None, str(err)
        if problem is not None:
            self.session.jobs.reject(hint.job_id, hint.attempt + 1, self.vm_id, problem)
            self.session.queues.dead_letter(message, f"job {hint.job_id}: {problem}")
            return None
        if task is None:
            try:
                self.session.jobs.get(hint.job_id)
            except JobNotFound:
                self.session.queues.dead_letter(message, f"unknown job {hint.job_id}")
        return task

    def start(self, task: JobTask) -> None:
        """Run a claimed job on its own thread."""
        attempt = Attempt(
            self.session,
            task,
            self.vm_id,
            self.root / "jobs",
            self.volumes,
            self.sandboxes,
            self.slot_users,
        )
        thread = threading.Thread(
            target=self._run_attempt, args=(attempt,), name=f"job-{task.id}", daemon=True
        )
        with self._lock:
            self._attempts[task.id] = (attempt, thread)
        log.info("claimed job %s attempt %d", task.id, task.attempt)
        if self.stopping.is_set():  # stopped during the claim: retried at once, like the rest
            attempt.kill(Reason.LOST_VM)
        thread.start()

    def _run_attempt(self, attempt: Attempt) -> None:
        try:
            attempt.run()
        finally:
            with self._lock:
                self._attempts.pop(attempt.task.id, None)
            self._slot_freed.set()

    # --- heartbeat -------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        """Leases first (a job whose lease lapses is given up), then the VM record. A lease
        renewal that failed is tried again at once, not a renewal period later."""
        renew_every_s = self.config.lease_s / 4
        last_renew = last_ship = time.monotonic()
        behind = False  # a renewal failed: the next turn comes soon and renews everyone
        while not self.stopping.wait(0.1 if behind else self.config.heartbeat_s):
            try:
                due = behind or time.monotonic() - last_renew >= renew_every_s
                if due:
                    last_renew = time.monotonic()
                behind = not self._renew_leases(everyone=due)
                if behind:  # the leases first: the VM's heartbeat can wait a turn
                    continue
                self._vm_heartbeat()
                if self._watch_spot and not self.drain.requested and spot_interrupted():
                    # Two minutes left: its jobs go back to the queue now, uncounted,
                    # rather than die with the VM and wait out their leases.
                    log.warning("spot interruption notice: draining, handing the jobs back")
                    self.drain.requested = True  # now, before its jobs are queued again
                    self.session.vms.request_drain(self.vm_id)
                    for attempt in self.running():
                        attempt.interrupt()
                if time.monotonic() - last_ship >= self.config.log_ship_s:
                    last_ship = time.monotonic()
                    for attempt in self.running():
                        attempt.ship_progress()
            except Exception:  # the heartbeat must outlive any single failure
                log.exception("heartbeat failed")

    def _fencing_loop(self) -> None:
        """Apart from the heartbeat, which may hang in a request to an unreachable endpoint."""
        while not self.stopping.wait(min(1.0, self.config.heartbeat_s)):
            for attempt in self.running():
                if not attempt.ended:
                    attempt.holds_lease()

    def _vm_heartbeat(self) -> None:
        running = self.running()
        try:
            drain, cancels = self.session.vms.heartbeat(self.vm_id, [a.task.id for a in running])
        except AwsError as err:
            log.warning("VM heartbeat failed: %s", err)
            return
        if self.drain.saw(drain):
            self._slot_freed.set()
        if self.drain.requested and not running and self._power_off is not None:
            # The main thread may sit in a long poll for up to 20 s: power off from here.
            log.info("drained: no job left, powering off")
            self.stopping.set()
            self._shutdown()
            self._power_off()
        for attempt in running:
            if attempt.task.id in cancels:
                log.info("job %s: cancel requested", attempt.task.id)
                attempt.kill(Reason.CANCELLED)

    def _renew_leases(self, everyone: bool) -> bool:
        """Renew the leases when due; attempts with events held back are renewed at once.
        False if a renewal failed."""
        renewed = True
        for attempt in self.running():
            with attempt.write_turn(wait=False) as mine:
                if not mine or attempt.ended:  # its result is being (or was) written
                    continue
                events = attempt.take_events()
                if not (everyone or events):
                    continue
                sent = time.monotonic()  # the lease runs from here, not from the answer
                try:
                    cancel = self.session.jobs.renew(attempt.task, self.vm_id, events)
                except AwsError as err:
                    attempt.restore_events(events)
                    log.warning("lease renewal of job %s failed: %s", attempt.task.id, err)
                    renewed = False
                    continue
            if cancel is None:
                log.warning(
                    "job %s: lease lost; killing it and writing nothing more", attempt.task.id
                )
                attempt.fence()
                continue
            attempt.last_renewed = sent
            log.debug("job %s attempt %d: lease renewed", attempt.task.id, attempt.task.attempt)
            if cancel:
                attempt.kill(Reason.CANCELLED)
        return renewed
