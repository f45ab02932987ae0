"""Who a job runs as, with which privileges: none. Every job starts through `setpriv`
(util-linux) with no-new-privs and empty inheritable, ambient and (where the agent may drop
it) bounding capability sets, so the capabilities the agent's unit grants it never reach a
job. When the session names a job user and the agent may switch users, each slot runs as its
own user, `<job_user>-<n>` (HTCondor's slot users): no job reads another's files."""

from __future__ import annotations

import os
import pwd
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ClobiError

CAP_SETPCAP = 8  # may drop capabilities from the bounding set


@dataclass(frozen=True)
class JobIdentity:
    name: str
    uid: int
    gid: int


def confined(argv: list[str], identity: JobIdentity | None) -> list[str]:
    """`argv` run with no privilege at all (and as `identity`, when given)."""
    command = ["setpriv", "--no-new-privs", "--inh-caps=-all", "--ambient-caps=-all"]
    if _holds(CAP_SETPCAP):
        command.append("--bounding-set=-all")
    if identity is not None:
        command += [f"--reuid={identity.uid}", f"--regid={identity.gid}", "--clear-groups"]
    return [*command, "--", *argv]


def _holds(capability: int) -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> capability & 1)
    except (OSError, ValueError):
        pass
    return False


def lookup(user: str) -> JobIdentity:
    """The user's ids; raises ClobiError when this machine has no such user."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ClobiError(f"job user {user!r} does not exist on this VM") from None
    return JobIdentity(user, entry.pw_uid, entry.pw_gid)


def hand_over(folder: Path, identity: JobIdentity) -> None:
    """Give a job its (fresh) work folder and what was extracted into it, links untouched."""
    for dirpath, dirnames, filenames in os.walk(folder):
        os.chown(dirpath, identity.uid, identity.gid, follow_symlinks=False)
        for name in [*dirnames, *filenames]:
            os.chown(Path(dirpath, name), identity.uid, identity.gid, follow_symlinks=False)


class SlotUsers:
    """The users a VM's slots run as, one per running job. Without a job user (or without
    the right to switch users) jobs run as the agent's own user, confined all the same."""

    def __init__(self, job_user: str | None, slots: int) -> None:
        self._prefix = job_user
        self._free = [f"{job_user}-{n}" for n in range(slots, 0, -1)] if job_user else []
        self._lock = threading.Lock()

    def acquire(self) -> JobIdentity | None:
        """A free slot user (made on first use when the agent is root); None: the agent's
        own user. Raises ClobiError when the slot user cannot be had."""
        if self._prefix is None:
            return None
        with self._lock:
            if not self._free:
                raise ClobiError("no free slot user: more jobs than slots")
            name = self._free.pop()
        try:
            return self._identity(name)
        except ClobiError:
            self.release(name)
            raise

    def release(self, name: str) -> None:
        with self._lock:
            self._free.append(name)

    def _identity(self, name: str) -> JobIdentity:
        try:
            return lookup(name)
        except ClobiError:
            if os.geteuid() != 0:  # on EC2 user-data made them; elsewhere root makes them
                raise
        made = subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--user-group",
                "--shell",
                "/bin/false",
                name,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if made.returncode not in (0, 9):  # 9: made meanwhile
            raise ClobiError(f"cannot make slot user {name}: {made.stderr.strip()}")
        return lookup(name)
