"""Fixtures of the release volume tests: an EC2 VM in the embedded endpoint, loop disks."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from job_agent.volumes.mounts import detach_loop, loop_device
from shared.errors import ReleaseError
from shared.session import Session
from tests.job_agent.ec2vm import Vm, ext4_image, make_vm


@pytest.fixture
def vm(aws_endpoint: str, make_session: Callable[..., Session]) -> Vm:
    return make_vm(aws_endpoint, make_session)


@pytest.fixture
def loop_disks(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Real block devices (loop devices over ext4 images) to stand in for EBS disks."""
    if os.geteuid() != 0 or not (shutil.which("losetup") and shutil.which("mkfs.ext4")):
        pytest.skip("needs root, losetup and mkfs.ext4")
    loops: list[Path] = []

    def make(text: str) -> Path:
        image = ext4_image(tmp_path, f"disk-{len(loops)}", {"data.txt": text})
        try:
            loops.append(loop_device(image, "test"))
        except ReleaseError as err:
            pytest.skip(f"no loop device: {err}")
        return loops[-1]

    yield make
    for loop in loops:
        detach_loop(loop)
