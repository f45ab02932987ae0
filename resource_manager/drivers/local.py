"""The `local` cloud: each VM is a real `clobi agent` process on this machine, in its own
session, cgroup (where this process may make one) and working area under
$CLOBI_HOME/vms/<session>/<vm>/."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from resource_manager.drivers.base import CloudDriver, Instance
from shared import cgroup
from shared.errors import DriverError
from shared.home import append_private, clobi_home, private_dir, write_private
from shared.models import Bootstrap, LocalCloud, SessionInfo
from shared.timings import KILL_WAIT_S


def session_root(session_id: str) -> Path:
    return clobi_home() / "vms" / session_id


class LocalDriver(CloudDriver):
    def __init__(self, info: SessionInfo, cloud: LocalCloud) -> None:
        self.name = cloud.name
        self._root = session_root(info.id)
        self._env = dict(os.environ)  # an aws_profile is the agent's to use: see JobAgent

    def launch(self, bootstrap: Bootstrap) -> str:
        vm_dir = self._root / bootstrap.vm_id
        existing = _read_pid(vm_dir)
        if existing is not None:
            return f"pid-{existing}"
        try:
            return f"pid-{self._start(bootstrap, vm_dir)}"
        except OSError as err:  # the VM's working area, its files, or the process itself
            raise DriverError(f"cannot start a local agent for {bootstrap.vm_id}: {err}") from err

    def _start(self, bootstrap: Bootstrap, vm_dir: Path) -> int:
        """Start the agent process in a new session; returns its pid. Raises OSError."""
        private_dir(vm_dir)
        bootstrap = bootstrap.model_copy(update={"workdir": str(vm_dir / "work")})
        write_private(vm_dir / "bootstrap.json", bootstrap.model_dump_json())
        argv = [sys.executable, "-m", "job_agent", "--bootstrap", str(vm_dir / "bootstrap.json")]
        folder = _vm_cgroup(bootstrap)
        try:
            with append_private(vm_dir / "console.log") as console:
                proc = subprocess.Popen(
                    argv if folder is None else cgroup.entering(folder, argv),
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=console,
                    cwd=vm_dir,
                    env=self._env,
                    start_new_session=True,
                )
        except OSError:
            if folder is not None:
                cgroup.remove(folder)
            raise
        record = {"pid": proc.pid, "start": _start_time(proc.pid), "cgroup": folder and str(folder)}
        write_private(vm_dir / "pid", json.dumps(record))
        return proc.pid

    def instances(self) -> list[Instance]:
        try:
            vm_dirs = sorted(self._root.iterdir())
        except FileNotFoundError:
            return []
        except OSError as err:
            raise DriverError(f"cloud {self.name}: cannot list {self._root}: {err}") from err
        found = []
        for vm_dir in vm_dirs:
            if not (vm_dir / "bootstrap.json").exists():
                continue
            try:
                bootstrap = json.loads((vm_dir / "bootstrap.json").read_text())
            except (OSError, ValueError):
                continue
            if bootstrap.get("cloud") != self.name:
                continue
            pid = _read_pid(vm_dir)
            if pid is None:  # the agent left: so did its jobs, whose cgroup goes
                _remove_cgroup(vm_dir, kill=False)
            found.append(Instance(vm_dir.name, f"pid-{pid}" if pid else "-", pid is not None))
        return found

    def terminate(self, vm_ids: list[str]) -> None:
        """Hard kill: SIGKILL the agent and every process of its cgroup and session (its
        jobs, and whatever they started, wherever it went)."""
        for vm_id in vm_ids:
            sid = _recorded_pid(self._root / vm_id)
            if sid is None:
                continue
            _remove_cgroup(self._root / vm_id, kill=True)
            if _session_still_ours(self._root / vm_id, sid):
                kill_session(sid)  # even when the agent died already: its jobs may live on
            unmount_under(self._root / vm_id)  # a VM's release mounts go with it
            if _read_pid(self._root / vm_id) is not None:
                raise DriverError(f"{vm_id}: agent process {sid} survived SIGKILL")

    def agent_pid(self, vm_id: str) -> int | None:
        """The pid of a VM's live agent process (its session leader), or None."""
        return _read_pid(self._root / vm_id)

    def remove_all(self) -> None:
        """Forget every VM's working area (after terminate, at session cleanup)."""
        shutil.rmtree(self._root, ignore_errors=True)


def _vm_cgroup(bootstrap: Bootstrap) -> Path | None:
    """A new cgroup for the VM below this process's, or None where it cannot make one."""
    parent = cgroup.own()
    if parent is None:
        return None
    try:
        return cgroup.make(parent, f"clobi-{bootstrap.session.id}-{bootstrap.vm_id}")
    except OSError:
        return None


def _remove_cgroup(vm_dir: Path, kill: bool) -> None:
    """Kill what is left in the VM's cgroup (with `kill`), and remove it once empty."""
    try:
        recorded = json.loads((vm_dir / "pid").read_text()).get("cgroup")
    except (OSError, ValueError):
        return
    if not recorded or not Path(recorded).name.startswith("clobi-"):
        return
    folder = Path(recorded)
    if kill:
        cgroup.kill(folder)
    if not cgroup.members(folder):
        cgroup.remove(folder)


def kill_session(sid: int, sig: int = signal.SIGKILL, wait_s: float = KILL_WAIT_S) -> None:
    """Signal every process in the session `sid` (the agent and the jobs it started)."""
    deadline = time.monotonic() + wait_s
    while True:
        members = session_members(sid)
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        _reap(members)
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)


def unmount_under(path: Path) -> None:
    """Lazily unmount every mount point below `path` (left by an agent killed hard)."""
    prefix = str(path.resolve()) + "/"
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def session_members(sid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is not None and stat[3] == sid and stat[0] != "Z":
            members.append(int(entry.name))
    return members


def _reap(pids: list[int]) -> None:
    for pid in pids:  # our own children would stay zombies otherwise
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _stat(pid: int) -> tuple[str, int, int, int, int] | None:
    """(state, ppid, pgrp, session, start time) from /proc/PID/stat, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(") ", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19])


def _start_time(pid: int) -> int | None:
    stat = _stat(pid)
    return stat[4] if stat else None


def _recorded_pid(vm_dir: Path) -> int | None:
    try:
        return int(json.loads((vm_dir / "pid").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def _session_still_ours(vm_dir: Path, sid: int) -> bool:
    """Whether the session `sid` is still our agent's: its leader is our agent, or dead (a
    session id is not reused while any process of that session lives). A live leader that
    started at another time took a reused pid: another session, not to be killed."""
    try:
        record = json.loads((vm_dir / "pid").read_text())
    except (OSError, ValueError):
        return False
    stat = _stat(sid)
    return stat is None or stat[0] == "Z" or stat[4] == record.get("start")


def _read_pid(vm_dir: Path) -> int | None:
    """The VM's agent pid if that very process is still alive (guards against pid reuse)."""
    try:
        record = json.loads((vm_dir / "pid").read_text())
    except (OSError, ValueError):
        return None
    pid = int(record["pid"])
    stat = _stat(pid)
    if stat is None or stat[0] == "Z" or stat[4] != record.get("start"):
        if stat is not None and stat[0] == "Z":
            _reap([pid])
        return None
    return pid
