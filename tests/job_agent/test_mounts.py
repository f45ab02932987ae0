"""The kernel mounts of release volumes (job_agent/volumes/mounts.py) as the agent's systemd
unit runs them on EC2: as an unprivileged user holding CAP_SYS_ADMIN, not as root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


def test_the_mount_needs_only_cap_sys_admin_as_the_agent_unit_grants(
    tmp_path: Path, loop_disks: Callable[[str], Path]
) -> None:
    """The EC2 agent runs as user clobi with CAP_SYS_ADMIN (and CAP_DAC_OVERRIDE), not as root:
    util-linux's mount refuses that caller, the mount(2) call the provider makes does not."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv")
    disk = loop_disks("capable\n")
    target = tmp_path / "mnt"
    target.mkdir()
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from job_agent.volumes.mounts import may_mount, mount_read_only, unmount\n"
        "assert os.geteuid() != 0 and may_mount()\n"
        "mount_read_only(Path(sys.argv[1]), Path(sys.argv[2]), 'x')\n"
        "print(Path(sys.argv[2], 'data.txt').read_text(), end='')\n"
        "unmount(Path(sys.argv[2]))\n"
    )
    caps = "+sys_admin,+dac_override"
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    as_nobody += [f"--inh-caps={caps}", f"--ambient-caps={caps}"]
    done = subprocess.run(
        [*as_nobody, sys.executable, "-c", code, str(disk), str(target)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "capable\n"
    assert not target.exists() and not os.path.ismount(target)


def test_loop_images_and_bind_mounts_need_only_cap_sys_admin_too(tmp_path: Path) -> None:
    """`loop` and `dir` releases (S3Volumes) mount the same way, as the unit's user."""
    tools = ("setpriv", "losetup", "mkfs.ext4")
    if os.geteuid() != 0 or not all(shutil.which(t) for t in tools):
        pytest.skip("needs root, setpriv, losetup and mkfs.ext4")
    content = tmp_path / "content"
    content.mkdir()
    (content / "data.txt").write_text("looped\n")
    image = tmp_path / "release.img"
    subprocess.run(["truncate", "-s", "8M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-d", str(content), str(image)], check=True)
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from job_agent.volumes.mounts import *\n"
        "image, loop_at, bind_at, source = map(Path, sys.argv[1:])\n"
        "assert os.geteuid() != 0 and may_mount()\n"
        "device = loop_device(image, 'x')\n"
        "loop_at.mkdir(); mount_read_only(device, loop_at, 'x')\n"
        "bind_at.mkdir(); bind_read_only(source, bind_at, 'x')\n"
        "print((loop_at / 'data.txt').read_text() + (bind_at / 'data.txt').read_text(), end='')\n"
        "for at in (loop_at, bind_at):\n"
        "    try:\n"
        "        (at / 'new').write_text('no'); print('writable')\n"
        "    except OSError: pass\n"
        "unmount(loop_at); unmount(bind_at); detach_loop(device)\n"
    )
    caps = "+sys_admin,+dac_override"
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    as_nobody += [f"--inh-caps={caps}", f"--ambient-caps={caps}"]
    paths = [image, tmp_path / "loop", tmp_path / "bind", content]
    done = subprocess.run(
        [*as_nobody, sys.executable, "-c", code, *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "looped\nlooped\n"  # read, and no write got through
    assert not os.path.ismount(tmp_path / "loop") and not os.path.ismount(tmp_path / "bind")
