"""Running one job process: its own process group, a scrubbed environment, walltime and kill."""

from __future__ import annotations

import contextlib
import os
import pwd
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import ClobiError
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
        user: str | None = None,
    ) -> None:
        self._task = task
        self._killed: Reason | None = None
        identity = _identity(user, workdir)
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            self._proc = subprocess.Popen(
                ["/bin/bash", task.script, *task.args],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                process_group=0,
                **identity,
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


def _identity(user: str | None, workdir: Path) -> dict[str, Any]:
    """Run as an unprivileged user: it gets the working directory. The agent needs root or
    CAP_SETUID/CAP_SETGID/CAP_CHOWN for this (vm-image's unit grants them)."""
    if user is None:
        return {}
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ClobiError(f"job user {user!r} does not exist on this VM") from None
    if entry.pw_uid == os.geteuid():
        return {}
    for dirpath, _, filenames in os.walk(workdir):
        os.chown(dirpath, entry.pw_uid, entry.pw_gid)
        for name in filenames:
            os.chown(Path(dirpath, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


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
