"""Release volumes behind one interface, mounted once per VM and shared by its jobs."""

from __future__ import annotations

import os
import shutil
import stat
import threading
from abc import ABC, abstractmethod
from pathlib import Path

from shared.aws import Aws, translated
from shared.errors import ClobiError, SandboxError
from shared.sandbox import extract


class VolumeProvider(ABC):
    @abstractmethod
    def mount(self, release: str) -> Path:
        """Make a release available read-only; returns its directory. Blocks while it fetches.
        Idempotent: a mounted release is returned at once. Raises ClobiError."""

    @abstractmethod
    def unmount_all(self) -> None:
        """Release every mounted volume. Idempotent; never raises."""


class DirVolumes(VolumeProvider):
    """`dir`: the release archive from S3, extracted once and made read-only. No root needed."""

    def __init__(self, aws: Aws, bucket: str, keys: dict[str, str], root: Path) -> None:
        self._aws = aws
        self._bucket = bucket
        self._keys = keys
        self._root = root
        self._lock = threading.Lock()
        self._mounted: dict[str, Path] = {}

    def mount(self, release: str) -> Path:
        with self._lock:
            if release in self._mounted:
                return self._mounted[release]
            key = self._keys.get(release)
            if key is None:
                raise ClobiError(f"release {release!r} is not known to the session")
            target = self._root / release
            if target.exists():
                _make_writable(target)
                shutil.rmtree(target)
            archive = self._root / f".{release}.tar.gz"
            archive.parent.mkdir(parents=True, exist_ok=True)
            with translated(f"download release {release}"):
                self._aws.s3.download_file(self._bucket, key, str(archive))
            try:
                extract(archive, target)
            except SandboxError as err:
                raise ClobiError(f"release {release}: {err}") from None
            finally:
                archive.unlink(missing_ok=True)
            _make_read_only(target)
            self._mounted[release] = target
            return target

    def unmount_all(self) -> None:
        with self._lock:
            for path in self._mounted.values():
                _make_writable(path)
                shutil.rmtree(path, ignore_errors=True)
            self._mounted.clear()


def _make_read_only(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    for dirpath, _, _ in os.walk(root, topdown=False):
        Path(dirpath).chmod(0o555)


def _make_writable(root: Path) -> None:
    for dirpath, _, _ in os.walk(root):
        Path(dirpath).chmod(0o755)
