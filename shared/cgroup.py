"""Kernel process containers (cgroup v2): a folder whose members, and everything they start,
the kernel keeps inside whatever session, process group or environment they shed, so they can
all be killed at once. Used for a local VM (its agent and jobs) and for each job."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)
EMPTY_WAIT_S = 5.0  # how long a kill waits for the kernel to report the cgroup empty


def own() -> Path | None:
    """The cgroup v2 folder this process is in, if it may make cgroups there; None where
    there is no cgroup v2 or the folder is not ours to divide (not delegated, not root)."""
    mount = _mount()
    if mount is None:
        return None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::") and not line.endswith(" (deleted)"):
            folder = mount / line[3:].lstrip("/")
            if (folder / "cgroup.procs").exists() and os.access(folder, os.W_OK):
                return folder
    return None


def _mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on a hybrid
    system), or None."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if "-" in fields and fields[fields.index("-") + 1] == "cgroup2":
            return Path(fields[4].replace("\\040", " "))
    return None


def make(parent: Path, name: str) -> Path:
    """A new, empty cgroup `name` below `parent`; raises OSError (one that exists already
    included: it may hold someone else's processes)."""
    folder = parent / name
    folder.mkdir()
    return folder


def entering(folder: Path, argv: list[str]) -> list[str]:
    """`argv` run inside `folder`: a shell moves itself in, then execs `argv` with the same
    pid, so the command and whatever it starts are members from their first instruction."""
    return ["/bin/sh", "-c", 'echo 0 > "$0" && exec "$@"', str(folder / "cgroup.procs"), *argv]


def members(folder: Path) -> list[int]:
    """The live processes in `folder` and below."""
    found: list[int] = []
    for procs in folder.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            found += [int(pid) for pid in procs.read_text().split()]
    return found


def kill(folder: Path, wait_s: float = EMPTY_WAIT_S) -> bool:
    """SIGKILL every process in `folder` and below, and wait until none is left; True if the
    cgroup is empty (or gone). cgroup.kill (Linux 5.14) kills them all at once, a fork bomb
    included; before it, members are killed one by one until none is left."""
    if not folder.exists():
        return True
    try:
        (folder / "cgroup.kill").write_text("1")
        one_by_one = False
    except OSError:
        one_by_one = True
    deadline = time.monotonic() + wait_s
    while True:
        pids = members(folder)
        if not pids:
            return True
        if time.monotonic() > deadline:
            log.warning("cgroup %s: %d processes outlived SIGKILL", folder, len(pids))
            return False
        if one_by_one:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def remove(folder: Path, wait_s: float = EMPTY_WAIT_S) -> None:
    """Delete `folder` and the cgroups below it, deepest first. Processes killed a moment ago
    may hold a cgroup busy a little longer: each removal is retried for up to `wait_s`."""
    if not folder.exists():
        return
    deadline = time.monotonic() + wait_s
    for child in [*sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True), folder]:
        while True:
            try:
                child.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as err:
                if err.errno != errno.EBUSY or time.monotonic() > deadline:
                    log.warning("cannot remove cgroup %s: %s", child, err)
                    return
                time.sleep(0.01)
