"""Running one job process: its own process group and jail, a scrubbed environment, capped
output, walltime and kill."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from job_agent import containment
from job_agent.containment import Jail
from job_agent.identity import JobIdentity, confined, hand_over
from job_agent.streams import CappedStream
from shared.records import JobTask, Reason
from shared.timings import KILL_GRACE_S

KEPT_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
DRAIN_S = 2.0  # the longest the agent reads output left in the pipes after the job


@dataclass(frozen=True)
class ProcessResult:
    exit_code: int | None
    reason: Reason | None  # None: it ran to its end (exit code says how)


class JobProcess:
    """One job's process group, in its jail (see containment), its stdout and stderr copied
    by the agent up to `log_cap` bytes each. `kill` may be called from any thread."""

    def __init__(
        self,
        task: JobTask,
        workdir: Path,
        env: dict[str, str],
        stdout: Path,
        stderr: Path,
        identity: JobIdentity | None = None,
        *,
        log_cap: int | None = None,
        jail: Callable[[str, int], Jail] = containment.jail,
    ) -> None:
        """Start the job, without privileges, as `identity` (the agent's user if None)."""
        self._task = task
        self._killed: Reason | None = None
        self._identity = identity
        self.left_behind = False  # some process of its slot user outlived every kill
        if identity is not None:
            hand_over(workdir, identity)
        self._jail = jail(task.id, task.attempt)
        self.streams = {
            "stdout": CappedStream(stdout, log_cap),
            "stderr": CappedStream(stderr, log_cap),
        }
        try:
            with containment.starting():
                self._proc = subprocess.Popen(
                    self._jail.argv(confined(["/bin/bash", task.script, *task.args], identity)),
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=self.streams["stdout"].write_fd,
                    stderr=self.streams["stderr"].write_fd,
                    process_group=0,
                )
                self._jail.started(self._proc.pid)
        except BaseException:
            self._jail.end()
            self._close_streams()
            raise
        finally:
            for stream in self.streams.values():
                os.close(stream.write_fd)  # the job's ends: EOF once all its processes are gone
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
        """Block until the job and everything it started are gone; enforces the walltime."""
        try:
            code = self._wait_for_exit()
        finally:
            with self._wake_lock:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1
            self._kill_group(signal.SIGKILL)  # whatever the job left behind in its group
            self._jail.end()  # and anywhere else
            self._kill_escaped()
            if self._identity is not None:  # its slot user's: even one that shed its markers
                self.left_behind = not kill_user(self._identity)
            self._drain_streams()
        return ProcessResult(code, self._killed)

    def _wait_for_exit(self) -> int:
        """The exit code, as soon as the process exits (a pidfd), or once it is killed (a
        kill wakes the wait through a pipe) or its walltime is up. Copies its output
        meanwhile."""
        deadline = time.monotonic() + self._task.walltime if self._task.walltime else None
        hard_kill_at: float | None = None  # SIGKILL after SIGTERM's grace
        try:
            pidfd: int | None = os.pidfd_open(self.pid)
        except OSError:  # an old kernel: poll instead
            pidfd = None
        try:
            while self._proc.poll() is None:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    self.kill(Reason.WALLTIME)
                    deadline = None
                if self._killed is not None and hard_kill_at is None:
                    self._kill_group(signal.SIGTERM)
                    hard_kill_at = now + KILL_GRACE_S
                if hard_kill_at is not None and now >= hard_kill_at:
                    self._kill_group(signal.SIGKILL)
                    hard_kill_at = now + KILL_GRACE_S  # and again, should it still be there
                due = [t for t in (deadline, hard_kill_at) if t is not None]
                timeout = max(0.0, min(due) - now) if due else None
                if pidfd is None:
                    timeout = 0.05 if timeout is None else min(timeout, 0.05)
                self._select([self._wake_r] if pidfd is None else [self._wake_r, pidfd], timeout)
        finally:
            if pidfd is not None:
                os.close(pidfd)
        return self._proc.wait()

    def _select(self, fds: list[int], timeout: float | None) -> None:
        """Wait for one of `fds` or output, copying the output that came."""
        open_streams = [s for s in self.streams.values() if not s.closed]
        ready, _, _ = select.select(fds + [s.fd for s in open_streams], [], [], timeout)
        for stream in open_streams:
            if stream.fd in ready and not stream.read():
                stream.close()
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 64)

    def _drain_streams(self) -> None:
        """The output written before the job's end (every writer is dead now: EOF)."""
        deadline = time.monotonic() + DRAIN_S
        while any(not s.closed for s in self.streams.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._select([], left)
        self._close_streams()

    def _close_streams(self) -> None:
        for stream in self.streams.values():
            stream.close()

    def _kill_escaped(self) -> None:
        """Processes that left the job's group (double-forked daemons, setsid) still carry
        its CLOBI_JOB_ID and CLOBI_ATTEMPT: find them and kill them too."""
        kill_all(lambda: job_processes(self._task.id, self._task.attempt), rounds=3, pause_s=0.05)

    def _kill_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def kill_user(identity: JobIdentity, rounds: int = 20) -> bool:
    """SIGKILL every process of a slot user (one job at a time runs as it): as that user,
    `kill -9 -1` signals all of them at once (a fork loop cannot outrun it, and the agent
    needs no right to read their /proc). True once none is left."""
    for _ in range(rounds):
        if not [pid for pid, owner in _owners() if owner == identity.uid]:
            return True
        subprocess.run(
            confined(["kill", "-s", "KILL", "--", "-1"], identity),
            capture_output=True,
            check=False,
        )
        time.sleep(0.02)
    return not [pid for pid, owner in _owners() if owner == identity.uid]


def kill_all(find: Callable[[], list[int]], rounds: int, pause_s: float) -> None:
    """SIGKILL what `find` lists, again (it may have forked meanwhile) until it lists none."""
    for _ in range(rounds):
        pids = find()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(pause_s)


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
    """A scrubbed environment: a few basics, the job's own variables, and clobi's own (CLOBI_*)."""
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
