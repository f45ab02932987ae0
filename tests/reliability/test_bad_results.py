"""`clobi fetch` and `clobi logs` of a crafted or broken result archive fail in one line
and write nothing outside the destination."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from shared import naming
from shared.records import JobState
from shared.transitions import Outcome
from tests.helpers import cli, tar_archive
from tests.reliability.bad_input import (
    Shared,
    assert_one_error_line,
    bad_archive_params,
    declared_huge,
    entry,
    tree,
)


@pytest.fixture(scope="module")
def finished(shared: Shared, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A job that ran and succeeded, as an agent records it (claim, then complete): its id
    and the key of its result archive, which each test replaces by a crafted one. No fetch
    of it ever succeeds, so each fetch tries again."""
    script = tmp_path_factory.mktemp("finished") / "done.sh"
    script.write_text("true\n")
    session = shared.session
    (job,) = JobClient(session).submit(JobSpec(script=str(script)))
    task = session.jobs.claim(job, 0, "vm-test-000001")
    assert task is not None
    key = naming.attempt_prefix(session.info.prefix, job, task.attempt) + naming.RESULT_ARCHIVE
    outcome = Outcome(JobState.SUCCEEDED, 0, None, key)
    assert session.jobs.complete(task, "vm-test-000001", outcome) is JobState.SUCCEEDED
    return job, key


@pytest.mark.parametrize(("build", "member", "expected"), bad_archive_params())
def test_fetch_refuses_a_crafted_result_in_one_line_and_writes_nothing_outside(
    tmp_path: Path,
    shared: Shared,
    finished: tuple[str, str],
    build: Callable[[Path], bytes],
    member: str,
    expected: str,
) -> None:
    session, (job, key) = shared.session, finished
    work = tmp_path / "work"
    outside = work / "deep"
    outside.mkdir(parents=True)
    (outside / "victim").write_text("untouched\n")
    session.aws.s3.put_object(Bucket=session.info.bucket, Key=key, Body=build(outside))
    dest = outside / "er" / "dest"
    before = tree(work, skip=dest)
    result = cli("fetch", job, "-o", str(dest), *shared.arg)
    assert_one_error_line(result, f"clobi: error: job {job}: sandbox member ", expected)
    assert member in result.err
    assert tree(work, skip=dest) == before
    assert not (dest / job / ".clobi-fetched").exists()
    kinds = [e.kind for e in JobClient(session).events([job])]
    assert "fetched" not in kinds


def test_fetch_into_a_destination_holding_a_link_writes_nothing_through_it(
    tmp_path: Path, shared: Shared, finished: tuple[str, str]
) -> None:
    session, (job, key) = shared.session, finished
    session.aws.s3.put_object(
        Bucket=session.info.bucket, Key=key, Body=tar_archive(entry("stdout", data=b"pwned"))
    )
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    dest = tmp_path / "dest"
    (dest / job).mkdir(parents=True)
    (dest / job / "stdout").symlink_to(victim)
    result = cli("fetch", job, "-o", str(dest), *shared.arg)
    assert_one_error_line(result, f"job {job}: sandbox member 'stdout': the destination holds")
    assert victim.read_text() == "untouched\n"


@pytest.mark.parametrize(
    ("body", "output_dir", "expected"),
    [
        (b"not an archive at all", "dest", "archive is unreadable: not a tar archive"),
        (declared_huge("stdout", 2**33), "dest", "sandbox member 'stdout': larger than"),
        (tar_archive(entry("stdout", data=b"fine\n")), "a-file", "cannot write into"),
    ],
    ids=["garbage", "huge-stdout", "into-a-file"],
)
def test_fetch_and_logs_of_a_broken_result_are_one_line(
    tmp_path: Path,
    shared: Shared,
    finished: tuple[str, str],
    body: bytes,
    output_dir: str,
    expected: str,
) -> None:
    session, (job, key) = shared.session, finished
    (tmp_path / "a-file").write_text("a file, not a folder\n")
    session.aws.s3.put_object(Bucket=session.info.bucket, Key=key, Body=body)
    before = tree(tmp_path)
    result = cli("fetch", job, "-o", str(tmp_path / output_dir), *shared.arg)
    assert_one_error_line(result, f"job {job}: ", expected)
    made = None if output_dir == "a-file" else tmp_path / output_dir  # fetch creates DIR/<job>
    assert tree(tmp_path, skip=made) == before
    logs = cli("logs", job, *shared.arg)
    if output_dir == "a-file":
        assert logs.code == 0 and logs.out == "fine\n"
    else:
        assert_one_error_line(logs, expected)
