"""One attempt of one job on this VM: fetch the sandbox, run, ship outputs, record the result.

Every write is conditioned on still owning the attempt; once fenced (lease lost), the attempt
kills its process and writes nothing more.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from job_agent.identity import JobIdentity, SlotUsers
from job_agent.runner import JobProcess, job_environment
from job_agent.volumes import VolumeProvider
from shared import naming, sandbox
from shared.aws import translated
from shared.dispatch import Dispatcher
from shared.errors import ClobiError, SandboxError
from shared.records import JobState, JobTask, Reason
from shared.sandbox import INPUT_LIMITS
from shared.session import Session
from shared.taskrules import sandbox_digest
from shared.timings import FENCE_AFTER
from shared.transitions import Outcome

log = logging.getLogger(__name__)
SAVING_ABOVE_BYTES = 8 * 1024**2  # results bigger than this show the `saving` state


class SandboxCache:
    """Input sandboxes are content-addressed: each is downloaded once per VM."""

    def __init__(self, session: Session, root: Path) -> None:
        self._session = session
        self._root = root
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def get(self, key: str) -> Path:
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            digest = sandbox_digest(key, self._session.info.prefix)
            if digest is None:  # checked with the task already; never a path of its choosing
                raise SandboxError(f"{key[:200]!r} is not an input sandbox of the session")
            path = self._root / f"{digest}.tar.gz"
            if not path.exists():
                self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
                tmp = path.with_suffix(".part")
                with translated("download input sandbox"):
                    self._session.aws.s3.download_file(self._session.info.bucket, key, str(tmp))
                if _sha256(tmp) != digest:  # replaced in S3: not what was submitted
                    tmp.unlink()
                    raise SandboxError(f"input sandbox {digest[:12]}: its content is not its name")
                tmp.replace(path)
            return path


def _sha256(path: Path) -> str:
    with open(path, "rb") as source:
        return hashlib.file_digest(source, "sha256").hexdigest()


class Attempt:
    def __init__(
        self,
        session: Session,
        task: JobTask,
        vm_id: str,
        root: Path,
        volumes: VolumeProvider,
        sandboxes: SandboxCache,
        users: SlotUsers,
    ) -> None:
        self.task = task
        self._session = session
        self._vm = vm_id
        self._root = root
        self._workdir = root / f"{task.id}.{task.attempt}"
        self._logs = root / f"{task.id}.{task.attempt}.logs"  # out of the job's reach
        self._made: list[Path] = []
        self._users = users
        self._identity: JobIdentity | None = None  # the slot user it runs as, while it runs
        self._volumes = volumes
        self._sandboxes = sandboxes
        self._process: JobProcess | None = None
        self._pending_kill: Reason | None = None
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # one write of the attempt at a time: see write_turn
        self.fenced = False
        self.interrupted = False
        self.ended = False
        self.last_renewed = time.monotonic()
        self._prefix = naming.attempt_prefix(session.info.prefix, task.id, task.attempt)
        # The `started` event goes with the attempt's first write: a lease renewal soon after
        # the start, or the result of a short job. One request less per job.
        self._events = [session.jobs.started_event(task, vm_id)]

    # --- called from the heartbeat thread ----------------------------------------------------

    def kill(self, reason: Reason) -> None:
        with self._lock:
            if self._pending_kill is None:
                self._pending_kill = reason
            process = self._process
        if process is not None:
            process.kill(reason)

    def interrupt(self) -> None:
        """The VM is going away (a spot notice): stop the job; it goes back to the queue
        without its attempt counted."""
        self.interrupted = True
        self.kill(Reason.LOST_VM)

    def fence(self) -> None:
        """Our lease is gone: stop the job and never write for this attempt again."""
        self.fenced = True
        self.kill(Reason.LOST_VM)

    def holds_lease(self) -> bool:
        """Self-fencing: a lease not renewed for most of its period is given up (whatever the
        heartbeat thread is stuck on), so the reaper's retry never overlaps this attempt."""
        limit = self._session.info.config.lease_s * FENCE_AFTER
        if not self.fenced and time.monotonic() - self.last_renewed > limit:
            log.warning(
                "job %s attempt %d: lease not renewed for %.0f s; self-fencing",
                self.task.id,
                self.task.attempt,
                limit,
            )
            self.fence()
        return not self.fenced

    # --- events held back till the attempt's next write ---------------------------------------

    @contextmanager
    def write_turn(self, *, wait: bool = True) -> Iterator[bool]:
        """The attempt's writes (lease renewals, the result) take turns, so the events held
        back go out with exactly one of them: a renewal racing the result would otherwise
        take the events, lose to the result's write, and drop them. Yields whether the turn
        was had (without `wait`, not while another write is under way)."""
        had = self._writing.acquire(blocking=wait)
        try:
            yield had
        finally:
            if had:
                self._writing.release()

    def take_events(self) -> list[dict[str, Any]]:
        with self._lock:
            events, self._events = self._events, []
        return events

    def restore_events(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            self._events[:0] = events

    # --- the attempt's own thread --------------------------------------------------------------

    def run(self) -> None:
        try:
            outcome = self._run() if self._made_workdirs() else self._failed_workdirs()
            if outcome is None:
                return
            with self.write_turn():
                if not self.holds_lease():
                    return
                events = self.take_events()
                state = self._session.jobs.complete(
                    self.task, self._vm, outcome, events, interrupted=self.interrupted
                )
                self.ended = True  # recorded (or superseded): no lease to renew any more
            if state is None:
                log.warning(
                    "job %s attempt %d was superseded; result dropped",
                    self.task.id,
                    self.task.attempt,
                )
            else:
                log.info("job %s attempt %d: %s", self.task.id, self.task.attempt, state)
            if state is JobState.QUEUED:  # a retry: release its message right away
                Dispatcher(self._session).fill()
        except Exception:
            # Nothing was recorded: the lease runs out and the reaper retries the job.
            log.exception("job %s attempt %d: agent error", self.task.id, self.task.attempt)
        finally:
            for made in self._made:  # only what this attempt made: never a planted path
                shutil.rmtree(made, ignore_errors=True)
            if self._identity is not None:
                self._release_slot_user(self._identity)

    def _release_slot_user(self, identity: JobIdentity) -> None:
        """Back to the pool, unless some process of it outlived the job (JobProcess.wait
        killed them all otherwise): the next job of that user would share it."""
        if self._process is not None and self._process.left_behind:
            log.error("slot user %s still has processes: not used again", identity.name)
            return
        self._users.release(identity.name)

    def _made_workdirs(self) -> bool:
        """The work and log folders, made fresh (never an existing path, never through a
        link) right inside the jobs folder, private to the agent till the job starts."""
        self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        root = self._root.resolve()
        for folder in (self._workdir, self._logs):
            if folder.parent.resolve() != root:
                return False
            try:
                folder.mkdir(mode=0o700)
            except OSError:
                return False
            self._made.append(folder)
        return True

    def _failed_workdirs(self) -> Outcome:
        return self._failed(Reason.AGENT_ERROR, f"cannot make a fresh {self._workdir.name}")

    def _run(self) -> Outcome | None:
        task = self.task
        try:
            sandbox.extract(self._sandboxes.get(task.sandbox_key), self._workdir, INPUT_LIMITS)
        except ClobiError as err:
            return self._failed(Reason.INPUT_ERROR, str(err))
        release_dir = None
        if task.release:
            try:
                release_dir = self._volumes.mount(task.release)
            except ClobiError as err:
                return self._failed(Reason.RELEASE_ERROR, str(err))
        env = job_environment(task, self._session.id, self._workdir, release_dir)
        with self._lock:
            if self._pending_kill is not None:
                return self._killed_before_start()
            try:
                self._identity = self._users.acquire()
                self._process = JobProcess(
                    task,
                    self._workdir,
                    env,
                    self._logs / "stdout",
                    self._logs / "stderr",
                    self._identity,
                    log_cap=self._session.info.config.max_log_bytes,
                )
            except (ClobiError, OSError) as err:
                return self._failed(Reason.AGENT_ERROR, f"cannot start the job: {err}")
        result = self._process.wait()
        if not self.holds_lease():
            return None
        try:
            result_key = self._ship()
        except ClobiError as err:
            return self._failed(Reason.OUTPUT_ERROR, str(err))
        except OSError as err:  # the disk filled up, say: the job's files go first
            shutil.rmtree(self._workdir, ignore_errors=True)
            return self._failed(Reason.OUTPUT_ERROR, f"cannot pack the result: {err}")
        if result_key is None:
            return None
        if result.reason is Reason.CANCELLED:
            return Outcome(JobState.CANCELLED, result.exit_code, Reason.CANCELLED, result_key)
        if result.reason is not None:
            return Outcome(JobState.FAILED, result.exit_code, result.reason, result_key)
        if result.exit_code == 0:
            return Outcome(JobState.SUCCEEDED, 0, None, result_key)
        return Outcome(JobState.FAILED, result.exit_code, Reason.EXIT_CODE, result_key)

    def _killed_before_start(self) -> Outcome | None:
        if self.fenced:
            return None
        reason = self._pending_kill or Reason.CANCELLED
        state = JobState.CANCELLED if reason is Reason.CANCELLED else JobState.FAILED
        return Outcome(state, None, reason, None)

    def _failed(self, reason: Reason, message: str) -> Outcome:
        log.warning("job %s attempt %d: %s: %s", self.task.id, self.task.attempt, reason, message)
        error = self._session.events.item(
            self.task.id,
            "error",
            attempt=self.task.attempt,
            vm=self._vm,
            detail=f"{reason}: {message}"[:500],
        )
        with self._lock:
            self._events.append(error)
        return Outcome(JobState.FAILED, None, reason, None)

    def _ship(self) -> str | None:
        """Upload one result archive (stdout, stderr and the files matching `outputs`) under
        the attempt's prefix; returns its key, or None if the attempt turned out superseded.
        A big result is announced first as `saving`, which also checks we still own the job."""
        archive = self._logs / naming.RESULT_ARCHIVE
        streams = [(name, self._logs / name) for name in ("stdout", "stderr")]
        outputs = self._outputs()
        try:
            with open(archive, "wb") as out:
                sandbox.write(streams, out, outputs)
        finally:
            for _, handle in outputs:
                handle.close()
        if archive.stat().st_size > SAVING_ABOVE_BYTES and not self._session.jobs.start_saving(
            self.task, self._vm
        ):
            self.fenced = True
            return None
        key = self._prefix + naming.RESULT_ARCHIVE
        with translated("upload the result"):
            self._session.aws.upload(archive, self._session.info.bucket, key)
        return key

    def ship_progress(self) -> None:
        """Ship stdout/stderr of the running job, so `clobi logs` shows how far it got."""
        if self._process is None or self.fenced:
            return
        for stream in ("stdout", "stderr"):
            path = self._logs / stream  # capped as the job writes (see streams)
            if path.exists():
                with translated(f"upload {stream}"):
                    self._session.aws.upload(path, self._session.info.bucket, self._prefix + stream)

    def _outputs(self) -> list[tuple[str, IO[bytes]]]:
        """The files matching `outputs`, opened beneath the work folder without following a
        link at any level (a folder swapped for a link is not entered; a file opened is the
        file checked), so a job cannot make the agent pack a file outside it."""
        found: list[tuple[str, IO[bytes]]] = []
        walk = os.fwalk(self._workdir, follow_symlinks=False)
        for dirpath, _, filenames, dirfd in walk:
            folder = Path(dirpath).relative_to(self._workdir)
            if folder.parts[:1] == (".tmp",):
                continue
            for name in filenames:
                relative = (folder / name).as_posix()
                if relative in ("stdout", "stderr"):
                    continue  # the streams have these names in the result
                if not any(fnmatch.fnmatch(relative, p) for p in self.task.outputs):
                    continue
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dirfd)
                except OSError:  # a link (ELOOP), or gone
                    continue
                handle = os.fdopen(fd, "rb")
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    found.append((relative, handle))
                else:
                    handle.close()
        return found
