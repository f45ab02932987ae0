"""Process and disk faults: the local VMs' agent processes, frozen, thawed or killed, and a
small tmpfs to fill."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from resource_manager.drivers.local import LocalDriver
from shared.models import LocalCloud
from shared.session import Session


def agent_pid(session: Session, vm: str) -> int:
    cloud = session.info.config.clouds[0]
    assert isinstance(cloud, LocalCloud)
    pid = LocalDriver(session.info, cloud).agent_pid(vm)
    assert pid is not None, f"{vm} has no agent process"
    return pid


def kill(pid: int) -> None:
    """SIGKILL: the agent dies at once; its jobs are orphaned (a VM crash)."""
    os.kill(pid, signal.SIGKILL)


def freeze(pid: int) -> None:
    """SIGSTOP: a frozen VM (its jobs run on; the agent neither renews nor writes)."""
    os.kill(pid, signal.SIGSTOP)


def thaw(pid: int) -> None:
    os.kill(pid, signal.SIGCONT)


def terminate(pid: int) -> None:
    """SIGTERM: the VM is stopped from outside (its jobs are killed and retried)."""
    os.kill(pid, signal.SIGTERM)


@contextmanager
def tmpfs(path: Path, size: str = "8m") -> Iterator[Path]:
    """A small tmpfs mounted at `path` (root only), to fill up."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        for log in sorted(path.rglob("console.log")):  # gone with the tmpfs: shown now
            print(f"--- {log} ---\n{log.read_text(errors='replace')[-4000:]}")
        subprocess.run(["umount", "-l", str(path)], check=False)
