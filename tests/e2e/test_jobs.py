"""Jobs end to end: real agent processes on local VMs, real scripts, outputs back on disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.pool import Pool
from shared.records import JobState
from shared.session import Session
from tests.helpers import cli, wait_until

STATUS_FIELDS = {
    "id",
    "name",
    "state",
    "priority",
    "attempt",
    "exit_code",
    "reason",
    "vm",
    "submitted_at",
    "started_at",
    "finished_at",
}


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/bash\nset -e\n" + body)
    return str(path)


def test_jobs_run_on_local_vms_and_results_come_back(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    Pool(session).start("local", 2)
    (tmp_path / "input.txt").write_text("42\n")
    ok = script(
        tmp_path,
        "ok.sh",
        'read n < input.txt\necho "env $CLOBI_JOB_ID '
        '$CLOBI_ATTEMPT $CLOBI_CORES $CLOBI_SESSION"\n'
        'echo "$((n * 2))" > "double-$CLOBI_JOB_ID.out"\necho err >&2\n'
        'test "$CLOBI_WORKDIR" = "$PWD"\ntest -z "${AWS_SECRET_ACCESS_KEY:-}"\n',
    )
    bad = script(tmp_path, "bad.sh", "echo failing\nexit 3\n")
    client = JobClient(session)
    ids = client.submit(
        [
            JobSpec(script=ok, count=3, inputs=(str(tmp_path / "input.txt"),), outputs=("*.out",)),
            JobSpec(script=bad, max_attempts=2, name="bad"),
        ]
    )
    assert len(ids) == 4
    rows = {r.id: r for r in client.wait(ids, timeout=60)}
    good_ids, bad_id = ids[:3], ids[3]
    for job_id in good_ids:
        assert rows[job_id].state is JobState.SUCCEEDED
        assert rows[job_id].exit_code == 0 and rows[job_id].attempt == 1
        assert rows[job_id].vm and rows[job_id].started_at and rows[job_id].finished_at
    assert rows[bad_id].state is JobState.FAILED
    assert (rows[bad_id].exit_code, rows[bad_id].reason, rows[bad_id].attempt) == (
        3,
        "exit_code",
        2,
    )
    kinds = [e.kind for e in client.events([bad_id])]
    assert kinds == ["submitted", "started", "retry", "started", "failed"]

    status = cli("status", "--json", "--session", session.id)
    assert status.code == 0
    listed = status.json()
    assert {row["id"] for row in listed} == set(ids)
    assert all(row.keys() >= STATUS_FIELDS for row in listed)

    out = tmp_path / "results"
    fetched = cli("fetch", "-o", str(out), "--session", session.id)
    assert fetched.code == 0, fetched.err
    for job_id in good_ids:
        assert (out / job_id / f"double-{job_id}.out").read_text() == "84\n"
        stdout = (out / job_id / "stdout").read_text()
        assert stdout == f"env {job_id} 1 1 {session.id}\n"
        assert (out / job_id / "stderr").read_text() == "err\n"
    assert not (out / bad_id).exists() and "1 failed" in fetched.err  # succeeded ones only
    unsuccessful = cli("fetch", "-o", str(out), "--unsuccessful", "--session", session.id)
    assert unsuccessful.code == 0, unsuccessful.err
    assert (out / "failed" / bad_id / "stdout").read_text() == "failing\n"

    waited = cli("wait", "--session", session.id)
    assert waited.code == 1 and "1 failed" in waited.out


def test_a_repeated_submit_with_a_token_creates_nothing_new(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    job = script(tmp_path, "j.sh", "true\n")
    first = cli(
        "submit",
        "--script",
        job,
        "--count",
        "3",
        "--token",
        "t1",
        "--json",
        "--session",
        session.id,
    )
    again = cli(
        "submit",
        "--script",
        job,
        "--count",
        "3",
        "--token",
        "t1",
        "--json",
        "--session",
        session.id,
    )
    assert first.code == 0, first.err
    assert first.json() == again.json()
    assert len(cli("status", "--json", "--session", session.id).json()) == 3
    events = JobClient(session).events(first.json())
    assert [e.kind for e in events].count("submitted") == 3


def test_invalid_submissions_are_one_line_and_create_nothing(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    job = script(tmp_path, "j.sh", "true\n")
    cases = {
        ("--script", str(tmp_path / "missing.sh")): "no such file",
        ("--script", job, "--priority", "4"): "priority 4 is out of range",
        ("--script", job, "--release", "9.9"): "release '9.9' is not known",
        ("--script", job, "--output", "../x"): "must be relative",
        ("--script", job, "--count", "0"): "count",
    }
    for args, message in cases.items():
        result = cli("submit", *args, "--session", session.id)
        assert result.code == 1, args
        assert message in result.err and result.err.count("\n") == 1, result.err
    assert cli("status", "--json", "--session", session.id).json() == []


def test_vm_list_shows_running_vms_with_their_cores(make_session: Callable[..., Session]) -> None:
    session = make_session()
    started = cli("vm", "start", "local", "-n", "2", "--json", "--session", session.id).json()

    def running() -> list[dict[str, object]]:
        rows = cli("vm", "list", "--json", "--session", session.id).json()
        return rows if [r["state"] for r in rows] == ["running", "running"] else []

    rows = wait_until(running, timeout=30, what="two running VMs")
    assert {r["id"] for r in rows} == set(started)
    assert all(r["cores"] == 2 and r["cloud"] == "local" for r in rows)
    over = cli("vm", "start", "local", "-n", "3", "--session", session.id)
    assert over.code == 1 and "max_vms is 4" in over.err
