"""A forged job item or message (written by anyone who can write the table or the queue: the
submitter role, a compromised agent) cannot steer the agent outside its jobs folder."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.drivers.local import session_root
from resource_manager.pool import Pool
from shared import naming, sandbox
from shared.dispatch import Dispatcher
from shared.jobcreate import NewJob
from shared.models import ReleaseConfig
from shared.records import JobState
from shared.session import Session
from tests.helpers import wait_until


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me\n")
    return victim


def _genuine_task(session: Session, tmp_path: Path) -> dict[str, Any]:
    """A task as the client writes it, with a real sandbox holding `job.sh`."""
    script = tmp_path / "job.sh"
    script.write_text("echo pwned > pwned.txt\n")
    data = sandbox.pack([("job.sh", script)])
    key = naming.sandbox_key(session.info.prefix, sandbox.digest(data))
    session.aws.s3.put_object(Bucket=session.info.bucket, Key=key, Body=data)
    return {"script": "job.sh", "outputs": ["pwned.txt"], "sandbox_key": key}


def _forge(session: Session, job_id: str, task: dict[str, Any]) -> None:
    session.jobs.create(
        [NewJob(id=job_id, name="forged", priority=1, max_attempts=3, task=task, seq=1)]
    )
    Dispatcher(session).fill()


def _dead_letters(session: Session) -> list[str]:
    out = session.aws.sqs.receive_message(
        QueueUrl=session.info.queue_urls["dlq"], MaxNumberOfMessages=10, WaitTimeSeconds=1
    )
    return [m["Body"] for m in out.get("Messages", [])]


def test_a_message_naming_a_path_as_its_job_is_dead_lettered_untouched(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    victim = _victim(tmp_path)
    hostile = f"../../../../../../../..{victim}"
    _forge(session, hostile, _genuine_task(session, tmp_path))  # item and message
    Pool(session).start("local", 1)
    letters = wait_until(lambda: _dead_letters(session), 30, what="a dead letter")
    assert hostile in letters[0]
    assert sorted(p.name for p in victim.iterdir()) == ["precious"]
    assert not Path(f"{victim}.1").exists() and not Path(f"{victim}.1.logs").exists()


@pytest.mark.parametrize(
    "field, value",
    [
        ("script", "../../../../../../bin/true"),
        ("sandbox_key", "sessions/another-session/sandboxes/" + "0" * 64 + ".tar.gz"),
        ("outputs", ["/etc/*"]),
        ("env", {"AWS_CONFIG_FILE": "/tmp/x"}),
        ("release", "../../etc"),
        ("walltime", 0),
        ("extra", "unknown field"),
    ],
)
def test_a_forged_task_fails_invalid_and_is_never_run(
    tmp_path: Path, make_session: Callable[..., Session], field: str, value: Any
) -> None:
    session = make_session()
    task = _genuine_task(session, tmp_path) | {field: value}
    _forge(session, "f0f0f0f0.0", task)
    Pool(session).start("local", 1)
    client = JobClient(session)
    (row,) = client.wait(["f0f0f0f0.0"], timeout=30)
    assert (row.state, row.reason) == (JobState.FAILED, "invalid")
    failed = [e for e in client.events(["f0f0f0f0.0"]) if e.kind == "failed"]
    assert failed and failed[0].detail and failed[0].detail.startswith("invalid: ")
    assert not list(session_root(session.id).rglob("pwned.txt"))


def test_a_link_planted_where_the_work_folder_goes_is_neither_followed_nor_removed(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session(max_attempts=1)
    victim = _victim(tmp_path)
    (vm,) = Pool(session).start("local", 1)
    job_id = naming.job_id(naming.batch_id(session.id, "planted"), 0)
    jobs = session_root(session.id) / vm / "work" / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    (jobs / f"{job_id}.1").symlink_to(victim)
    (jobs / f"{job_id}.1.logs").symlink_to(victim)
    script = tmp_path / "job.sh"
    script.write_text("echo pwned > pwned.txt\n")
    client = JobClient(session)
    client.submit(JobSpec(script=str(script), outputs=("pwned.txt",)), token="planted")
    (row,) = client.wait([job_id], timeout=30)
    assert (row.state, row.reason) == (JobState.FAILED, "agent_error")
    assert sorted(p.name for p in victim.iterdir()) == ["precious"]
    assert (jobs / f"{job_id}.1").is_symlink()  # not removed either


def test_a_sandbox_replaced_in_s3_is_refused(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session(max_attempts=1)
    client = JobClient(session)
    script = tmp_path / "job.sh"
    script.write_text("echo genuine\n")
    (job,) = client.submit(JobSpec(script=str(script)))
    item = session.jobs.get(job)
    key = json.loads(item["task"])["sandbox_key"]
    evil = tmp_path / "evil.sh"
    evil.write_text("echo replaced\n")
    data = sandbox.pack([("job.sh", evil)])
    session.aws.s3.put_object(Bucket=session.info.bucket, Key=key, Body=data)
    Pool(session).start("local", 1)
    (row,) = client.wait([job], timeout=30)
    assert (row.state, row.reason) == (JobState.FAILED, "input_error")
    assert "replaced" not in client.logs(job)["stdout"]


def test_a_sparse_sandbox_is_refused_by_the_agent_without_writing_its_size(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    """A few hundred bytes of archive that would unpack to 512 MiB."""
    session = make_session(max_attempts=1)
    big = tmp_path / "job.sh"
    with open(big, "wb") as out:
        out.truncate(512 * 1024**2)
    archive = tmp_path / "sparse.tar.gz"
    subprocess.run(["tar", "--sparse", "-czf", str(archive), "-C", str(tmp_path), "job.sh"])
    data = archive.read_bytes()
    assert len(data) < 2048
    key = naming.sandbox_key(session.info.prefix, sandbox.digest(data))
    session.aws.s3.put_object(Bucket=session.info.bucket, Key=key, Body=data)
    _forge(session, "5a5a5a5a.0", {"script": "job.sh", "sandbox_key": key})
    Pool(session).start("local", 1)
    (row,) = JobClient(session).wait(["5a5a5a5a.0"], timeout=30)
    assert (row.state, row.reason) == (JobState.FAILED, "input_error")
    detail = [e.detail for e in JobClient(session).events(["5a5a5a5a.0"]) if e.kind == "error"]
    assert "sparse file not allowed" in str(detail)


def test_a_release_replaced_in_s3_is_refused(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    import tarfile

    archive = tmp_path / "rel.tar.gz"
    (tmp_path / "data.txt").write_text("genuine\n")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "data.txt", arcname="data.txt")
    session = make_session(releases={"1.0": ReleaseConfig(archive=str(archive))}, max_attempts=1)
    (tmp_path / "data.txt").write_text("replaced\n")
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(tmp_path / "data.txt", arcname="data.txt")
    key = session.info.releases["1.0"]
    session.aws.s3.put_object(Bucket=session.info.bucket, Key=key, Body=evil.read_bytes())
    Pool(session).start("local", 1)
    client = JobClient(session)
    script = tmp_path / "job.sh"
    script.write_text('cat "$CLOBI_RELEASE_DIR/data.txt"\n')
    (job,) = client.submit(JobSpec(script=str(script), release="1.0"))
    (row,) = client.wait([job], timeout=30)
    assert (row.state, row.reason) == (JobState.FAILED, "release_error")
    assert "replaced" not in client.logs(job)["stdout"]
