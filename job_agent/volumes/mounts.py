"""Kernel mounts without util-linux's `mount`, which refuses a caller that is not root even
with CAP_SYS_ADMIN (all the agent's systemd unit grants): mount(2) and umount2(2) themselves,
and loop devices through `losetup`, which CAP_SYS_ADMIN is enough for."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import subprocess
from pathlib import Path

from shared.errors import ReleaseError

log = logging.getLogger(__name__)
CAP_SYS_ADMIN = 21
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND = 1, 2, 4, 32, 4096
MNT_DETACH = 2
PREFERRED_FILESYSTEMS = ("ext4", "xfs", "squashfs", "erofs", "btrfs")


def may_mount() -> bool:
    """Root, or the CAP_SYS_ADMIN capability the agent's systemd unit grants it."""
    if os.geteuid() == 0:
        return True
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    return False


def mount_read_only(device: Path, target: Path, release: str) -> None:
    """mount(2) itself: util-linux's mount refuses a caller that is not root even with
    CAP_SYS_ADMIN, all the agent's systemd unit grants. Each block filesystem the kernel knows
    is tried in turn, as `mount -t auto` does. Raises ReleaseError."""
    libc = ctypes.CDLL(None, use_errno=True)
    flags = MS_RDONLY | MS_NOSUID | MS_NODEV
    failures = []
    for fstype in _block_filesystems():
        source, path = os.fsencode(device), os.fsencode(target)
        if libc.mount(source, path, fstype.encode(), flags, None) == 0:
            return
        failures.append(ctypes.get_errno())
    # EINVAL is what a filesystem that is not on the device answers: any other errno says more.
    cause = next((e for e in failures if e != errno.EINVAL), errno.EINVAL)
    raise ReleaseError(f"release {release}: cannot mount {device} read-only: {os.strerror(cause)}")


def _block_filesystems() -> list[str]:
    """The filesystems the kernel can mount from a block device, the likely ones first."""
    try:
        lines = Path("/proc/filesystems").read_text().splitlines()
    except OSError:
        return list(PREFERRED_FILESYSTEMS)
    known = [line.strip() for line in lines if not line.startswith("nodev")]
    known = [name for name in known if name and name != "fuseblk"]
    return [n for n in PREFERRED_FILESYSTEMS if n in known] + [
        n for n in known if n not in PREFERRED_FILESYSTEMS
    ]


def unmount(target: Path) -> None:
    """Unmount, lazily if it is busy, and remove the mount point. Never raises."""
    libc = ctypes.CDLL(None, use_errno=True)
    path = os.fsencode(target)
    if libc.umount2(path, 0) != 0 and libc.umount2(path, MNT_DETACH) != 0:
        log.warning("cannot unmount %s: %s", target, os.strerror(ctypes.get_errno()))
    try:
        target.rmdir()
    except OSError as err:
        log.warning("cannot remove %s: %s", target, err.strerror)


def bind_read_only(source: Path, target: Path, release: str) -> None:
    """A read-only view of `source` at `target` (file modes do not stop root; this does)."""
    libc = ctypes.CDLL(None, use_errno=True)
    src, path = os.fsencode(source), os.fsencode(target)
    if libc.mount(src, path, None, MS_BIND, None) != 0:
        raise ReleaseError(f"release {release}: cannot bind {source}: {_errno_text()}")
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
    if libc.mount(None, path, None, flags, None) != 0:
        cause = _errno_text()
        unmount(target)
        raise ReleaseError(f"release {release}: cannot make {target} read-only: {cause}")


def loop_device(image: Path, release: str) -> Path:
    """A read-only loop device over `image`, released again with `detach_loop`."""
    done = subprocess.run(
        ["losetup", "--find", "--show", "--read-only", str(image)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ReleaseError(f"release {release}: losetup failed: {done.stderr.strip()}")
    return Path(done.stdout.strip())


def detach_loop(device: Path) -> None:
    """Never raises."""
    subprocess.run(["losetup", "--detach", str(device)], capture_output=True, check=False)


def _errno_text() -> str:
    return os.strerror(ctypes.get_errno())
