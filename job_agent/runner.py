"""Running one job process: its own process group, a scrubbed environment, walltime and kill."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from job_agent.identity import JobIdentity, confined, hand_over
from shared.models import JobTask, Reason

KEPT_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
GRACE_S = 3.0


@dataclass(frozen=True)
class ProcessResult:
    exit_code: int | None
    reason: Reason | None  # None: it ran to its end (exit code says how)


class JobProcess:
    """One job's process group. `kill` may be called from any thread."""

    def __init__(
        self,
        task: JobTask,
        workdir: Path,
        env: dict[str, str],
        stdout: Path,
        stderr: Path,
        identity: JobIdentity | None = None,
    ) -> None:
        """Start the job, without privileges, as `identity` (the agent's user if None)."""
        self._task = task
        self._killed: Reason | None = None
        self._identity = identity
        if identity is not None:
            hand_over(workdir, identity)
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            self._proc = subprocess.Popen(
                confined(["/bin/bash", task.script, *task.args], identity),
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                process_group=0,
            )
        self.pid = self._proc.pid
        self._wake_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def kill(self, reason: Reason) -> None:
        """Ask the job to stop (SIGTERM to its group, SIGKILL after a grace period)."""
        if self._killed is None:
            self._killed = reason
        with self._wake_lock, contextlib.suppress(BlockingIOError):  # full: woken already
            if self._wake_w >= 0:
                os.write(self._wake_w, b"k")

    def wait(self) -> ProcessResult:
        """Block until the process group is gone; enforces the walltime."""
        try:
            code = self._wait_for_exit()
        finally:
            with self._wake_lock:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1
        self._kill_group(signal.SIGKILL)  # whatever the job left behind in its group
        self._kill_escaped()
        if self._identity is not None:  # its slot user's: even one that shed its markers
            kill_user(self._identity.uid)
        if self._killed is not None:
            return ProcessResult(code, self._killed)
        return ProcessResult(code, None)

    def _wait_for_exit(self) -> int:
        """The exit code, as soon as the process exits (a pidfd), or once it is killed (a
        kill wakes the wait through a pipe) or its walltime is up."""
        deadline = time.monotonic() + self._task.walltime if self._task.walltime else None
        try:
            pidfd: int | None = os.pidfd_open(self.pid)
        except OSError:  # an old kernel: poll instead
            pidfd = None
        try:
            while self._proc.poll() is None:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    self.kill(Reason.WALLTIME)
                if self._killed is not None:
                    self._terminate_group()
                    break
                timeout = None if deadline is None else deadline - now
                if pidfd is None:
                    timeout = 0.05 if timeout is None else min(timeout, 0.05)
                waited = [self._wake_r] if pidfd is None else [self._wake_r, pidfd]
                select.select(waited, [], [], timeout)
        finally:
            if pidfd is not None:
                os.close(pidfd)
        return self._proc.wait()

    def _terminate_group(self) -> None:
        self._kill_group(signal.SIGTERM)
        try:
            self._proc.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        self._kill_group(signal.SIGKILL)

    def _kill_escaped(self) -> None:
        """Processes that left the job's group (double-forked daemons, setsid) still carry
        its CLOBI_JOB_ID and CLOBI_ATTEMPT: find them and kill them too."""
        for _ in range(3):
            pids = job_processes(self._task.id, self._task.attempt)
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def _kill_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def kill_user(uid: int, rounds: int = 20) -> None:
    """SIGKILL every process of `uid` (a slot user runs one job at a time) until none is
    left: nothing a job started outlives it, whatever it did to its group or environment."""
    for _ in range(rounds):
        pids = [pid for pid, owner in _owners() if owner == uid]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


def _owners() -> list[tuple[int, int]]:
    """(pid, real uid) of the live processes of this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if fields.get("State", "").split()[:1] != ["Z"]:
                found.append((int(entry.name), int(fields.get("Uid", "-1 0").split()[0])))
    return found


def job_processes(job_id: str, attempt: int | None = None) -> list[int]:
    """Live processes of a job on this machine, found by the CLOBI_ variables it was given."""
    wanted = f"CLOBI_JOB_ID={job_id}".encode()
    attempt_var = f"CLOBI_ATTEMPT={attempt}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        if wanted in environ and state != "Z" and (attempt is None or attempt_var in environ):
            found.append(int(entry.name))
    return found


def job_environment(
    task: JobTask, session_id: str, workdir: Path, release_dir: Path | None
) -> dict[str, str]:
    """A scrubbed environment: a few basics, the job's own variables, and SPEC §6's."""
    env = {key: os.environ[key] for key in KEPT_ENV if key in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    tmp = workdir / ".tmp"
    tmp.mkdir(exist_ok=True)
    env.update({"HOME": str(workdir), "TMPDIR": str(tmp)})
    env.update(task.env)
    env.update(
        {
            "CLOBI_JOB_ID": task.id,
            "CLOBI_SESSION": session_id,
            "CLOBI_ATTEMPT": str(task.attempt),
            "CLOBI_CORES": str(task.cores),
            "CLOBI_WORKDIR": str(workdir),
        }
    )
    if release_dir is not None:
        env["CLOBI_RELEASE_DIR"] = str(release_dir)
    return env
