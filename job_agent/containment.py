"""Nothing a job starts outlives it, whatever session, process group or environment it sheds
(`setsid env -i daemon &`): a cgroup (v2) per job where the agent may make one; otherwise the
agent is a child subreaper, so what a job leaves behind is adopted by the agent, not by init,
and killed with the job."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from pathlib import Path
from typing import Protocol

from shared import cgroup

PR_SET_CHILD_SUBREAPER = 36
KILL_ROUNDS = 50


class Jail(Protocol):
    """Where one job's processes are kept."""

    def argv(self, argv: list[str]) -> list[str]:
        """The command that starts `argv` inside the jail."""
        ...

    def started(self, pid: int) -> None:
        """Told the job's first process (already inside); call under `starting()`."""
        ...

    def end(self) -> None:
        """Kill whatever of the job is still alive and forget the jail. Blocks briefly."""
        ...


class CgroupJail:
    """A job's own cgroup below the agent's: the kernel keeps every process the job starts
    in it, and cgroup.kill ends them all at once."""

    def __init__(self, parent: Path, name: str) -> None:
        """Makes the cgroup; raises OSError when it cannot."""
        self.folder = cgroup.make(parent, f"clobi-job-{name}-{os.getpid()}")

    def argv(self, argv: list[str]) -> list[str]:
        return cgroup.entering(self.folder, argv)

    def started(self, pid: int) -> None:
        pass

    def end(self) -> None:
        cgroup.kill(self.folder)
        cgroup.remove(self.folder)


_lock = threading.Lock()  # Popen, and reaping adopted processes: a job's first one is never reaped
_mains: set[int] = set()  # jobs' first processes (Popen's to wait for)
_live = 0  # jails not ended yet
_subreaper = False


class AdoptedJail:
    """Without a cgroup: the agent is a child subreaper, so a process that leaves its job's
    tree is adopted by the agent. When a job ends, the agent kills what it adopted that still
    carries the job's CLOBI_JOB_ID and CLOBI_ATTEMPT, and what carries none (`env -i`) once no
    other job runs: with other jobs running it cannot tell whose that is."""

    def __init__(self, job_id: str, attempt: int) -> None:
        global _live, _subreaper
        self._marks = {f"CLOBI_JOB_ID={job_id}".encode(), f"CLOBI_ATTEMPT={attempt}".encode()}
        self._pid: int | None = None
        with _lock:
            if not _subreaper:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
                _subreaper = True
            _live += 1

    def argv(self, argv: list[str]) -> list[str]:
        return argv

    def started(self, pid: int) -> None:
        self._pid = pid
        _mains.add(pid)

    def end(self) -> None:
        global _live
        with _lock:
            _live -= 1
            _mains.discard(self._pid or -1)
        for _ in range(KILL_ROUNDS):
            if not self._kill_adopted():
                return
            time.sleep(0.01)

    def _kill_adopted(self) -> bool:
        """Kill this job's adopted processes (and unmarked ones when no job is left), reap
        adopted zombies; True if it killed any (their children are adopted next)."""
        killed = False
        with _lock:
            alone = _live == 0
            for pid, state in _adopted():
                if pid in _mains:
                    continue
                if state == "Z":
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)
                    continue
                marks = _marks_of(pid)
                if (marks is not None and self._marks <= marks) or (alone and not marks):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                    killed = True
        return killed


def starting() -> threading.Lock:
    """Held while a job's first process starts and is told to its jail."""
    return _lock


def _adopted() -> list[tuple[int, str]]:
    """(pid, state) of this process's children outside its process group: jobs' first
    processes and what the agent adopted (the agent's own helpers share its group)."""
    me, group = os.getpid(), os.getpgrp()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me and int(fields[2]) != group:
            found.append((int(entry.name), fields[0]))
    return found


def _marks_of(pid: int) -> set[bytes] | None:
    """The CLOBI_ markers in a process's environment (empty: none); None if unreadable."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return {item for item in environ if item.startswith(b"CLOBI_")}


def jail(job_id: str, attempt: int) -> Jail:
    """The job's jail: its own cgroup where the agent may make one, else adoption."""
    parent = cgroup.own()
    if parent is not None:
        with contextlib.suppress(OSError):
            return CgroupJail(parent, f"{job_id}.{attempt}")
    return AdoptedJail(job_id, attempt)
