"""Releases as jobs see them end to end: an archive unpacked once and bind-mounted read-only
for every job that names it, a filesystem image loop-mounted read-only (the providers' own
contract is test_volume_contract.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.pool import Pool
from shared.models import ReleaseConfig
from shared.records import JobState
from shared.session import Session
from tests.job_agent.test_protocol import script


def test_a_release_is_mounted_read_only_and_shared_by_jobs(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    (tmp_path / "rel").mkdir()
    (tmp_path / "rel" / "data.txt").write_text("release data\n")
    archive = tmp_path / "rel.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "rel" / "data.txt", arcname="data.txt")
    session = make_session(releases={"1.0": ReleaseConfig(archive=str(archive))})
    Pool(session).start("local", 1)
    client = JobClient(session)
    ids = client.submit(
        JobSpec(
            script=script(
                tmp_path,
                'set -e\ncat "$CLOBI_RELEASE_DIR/data.txt"\n'
                '! touch "$CLOBI_RELEASE_DIR/new" 2>/dev/null\n',
            ),
            release="1.0",
            count=2,
        )
    )
    rows = client.wait(ids, timeout=60)
    assert all(r.state is JobState.SUCCEEDED for r in rows), [r.reason for r in rows]
    assert all(client.logs(j)["stdout"] == "release data\n" for j in ids)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mkfs.ext4") is None,
    reason="loop mounts need root and mkfs.ext4",
)
def test_a_loop_image_release_is_mounted_read_only(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    (tmp_path / "rel").mkdir()
    (tmp_path / "rel" / "data.txt").write_text("image data\n")
    image = tmp_path / "rel.img"
    subprocess.run(["truncate", "-s", "8M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-d", str(tmp_path / "rel"), str(image)], check=True)
    session = make_session(releases={"2.0": ReleaseConfig(image=str(image))})
    Pool(session).start("local", 1)
    client = JobClient(session)
    job = client.submit(
        JobSpec(
            script=script(
                tmp_path,
                'set -e\ncat "$CLOBI_RELEASE_DIR/data.txt"\n'
                '! touch "$CLOBI_RELEASE_DIR/new" 2>/dev/null\n',
            ),
            release="2.0",
        )
    )[0]
    row = client.wait([job], timeout=60)[0]
    assert row.state is JobState.SUCCEEDED, client.logs(job)
    assert client.logs(job)["stdout"] == "image data\n"
