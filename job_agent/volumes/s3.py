"""Releases stored in the session's S3 prefix, mounted once per VM and shared by its jobs.

- `dir`: the release archive from S3, extracted once; read-only through a read-only bind mount
  when the agent is root, else through file modes. No root needed.
- `loop`: an ext4 or squashfs image from S3, mounted read-only through a loop device (root,
  or CAP_SYS_ADMIN as the systemd unit grants).
The session maps each release to its S3 key; the key's suffix says which kind it is.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import threading
from pathlib import Path

from job_agent.volumes.base import VolumeProvider, mounting
from job_agent.volumes.mounts import (
    bind_read_only,
    detach_loop,
    loop_device,
    may_mount,
    mount_read_only,
    unmount,
)
from shared.aws import Aws, translated
from shared.errors import ReleaseError, SandboxError
from shared.naming import IMAGE_SUFFIX
from shared.sandbox import Limits, extract

log = logging.getLogger(__name__)
# A software release is bigger than a job's sandbox: many files, some of them large. The same
# checks on every member (no links, no `..`, no devices), with room for a real release.
RELEASE_LIMITS = Limits(
    max_members=2_000_000, max_member_bytes=64 * 1024**3, max_total_bytes=512 * 1024**3
)


class S3Volumes(VolumeProvider):
    """Releases stored in the session's S3 prefix: `dir` archives and `loop` images."""

    def __init__(
        self,
        aws: Aws,
        bucket: str,
        keys: dict[str, str],
        root: Path,
        digests: dict[str, str] | None = None,
    ) -> None:
        self._aws = aws
        self._bucket = bucket
        self._keys = keys
        self._digests = digests or {}  # what the session uploaded: a replaced object is refused
        self._root = root
        self._lock = threading.Lock()
        self._mounted: dict[str, Path] = {}
        self._mounts: list[Path] = []  # kernel mounts to undo, in order
        self._loops: list[Path] = []  # loop devices to detach after them

    def mount(self, release: str) -> Path:
        """See VolumeProvider; one release at a time."""
        with self._lock, mounting(release):
            if release in self._mounted:
                return self._mounted[release]
            key = self._keys.get(release)
            if key is None:
                raise ReleaseError(f"release {release!r} is not known to the session")
            self._root.mkdir(parents=True, exist_ok=True)
            target = self._root / release
            _clear(target)
            download = self._root / f".{release}.download"
            with translated(f"download release {release}"):
                self._aws.s3.download_file(self._bucket, key, str(download))
            self._check(release, download)
            if key.endswith(IMAGE_SUFFIX):
                self._mount_image(release, download, target)
            else:
                self._mount_archive(release, download, target)
            self._mounted[release] = target
            log.info("release %s mounted read-only at %s", release, target)
            return target

    def _check(self, release: str, download: Path) -> None:
        wanted = self._digests.get(release)
        if wanted is None:  # a session made before releases had digests
            log.warning("release %s: no digest in the session to check it against", release)
            return
        with open(download, "rb") as data:
            found = hashlib.file_digest(data, "sha256").hexdigest()
        if found != wanted:
            download.unlink()
            raise ReleaseError(f"release {release}: not what the session uploaded (sha256 differs)")

    def _mount_archive(self, release: str, archive: Path, target: Path) -> None:
        data = self._root / f".{release}.data"
        _clear(data)
        try:
            extract(archive, data, RELEASE_LIMITS)
        except SandboxError as err:
            raise ReleaseError(f"release {release}: {err}") from None
        finally:
            archive.unlink(missing_ok=True)
        _make_read_only(data)
        if may_mount():  # file modes do not stop root: a read-only bind mount does
            target.mkdir()
            bind_read_only(data, target, release)
            self._mounts.append(target)
        else:
            data.rename(target)

    def _mount_image(self, release: str, image: Path, target: Path) -> None:
        if not may_mount():
            raise ReleaseError(f"release {release}: loop images need root or CAP_SYS_ADMIN")
        device = loop_device(image, release)
        target.mkdir()
        try:
            mount_read_only(device, target, release)
        except ReleaseError:
            detach_loop(device)
            raise
        self._mounts.append(target)
        self._loops.append(device)

    def unmount_all(self) -> None:
        with self._lock:
            for path in reversed(self._mounts):
                unmount(path)
            for device in self._loops:
                detach_loop(device)
            self._mounts.clear()
            self._loops.clear()
            self._mounted.clear()
            if self._root.exists():
                _make_writable(self._root)
                shutil.rmtree(self._root, ignore_errors=True)


def _clear(path: Path) -> None:
    if path.exists():
        _make_writable(path)
        shutil.rmtree(path)


def _make_read_only(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    for dirpath, _, _ in os.walk(root, topdown=False):
        Path(dirpath).chmod(0o555)


def _make_writable(root: Path) -> None:
    for dirpath, _, _ in os.walk(root):
        if not os.path.ismount(dirpath):
            Path(dirpath).chmod(0o755)
