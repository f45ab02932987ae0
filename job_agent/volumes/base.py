"""The VolumeProvider interface: a release mounted read-only, once per VM, shared by its jobs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.errors import ClobiError, ReleaseError


class VolumeProvider(ABC):
    @abstractmethod
    def mount(self, release: str) -> Path:
        """Make a release available read-only; returns its directory. Blocks while it fetches.
        Idempotent: a mounted release is returned at once. Raises ReleaseError (one line)."""

    @abstractmethod
    def unmount_all(self) -> None:
        """Release every mounted volume. Idempotent; never raises."""


@contextmanager
def mounting(release: str) -> Iterator[None]:
    """What fails inside (AWS, the disk, the kernel) leaves as the ReleaseError `mount`
    promises, its cause kept."""
    try:
        yield
    except ReleaseError:
        raise
    except (ClobiError, OSError) as err:
        text = str(err)
        prefix = "" if text.startswith(f"release {release}") else f"release {release}: "
        raise ReleaseError(f"{prefix}{text}") from err
