"""The Job Management Interface: API and CLI agree, reads never scan, filters and confirmation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobmgmt import JobSpec
from jobmgmt.client import JobClient, as_dicts
from resource_manager.pool import Pool
from shared.records import JobState
from shared.session import Session
from tests.helpers import cli


def script(tmp_path: Path, name: str = "job.sh", body: str = "echo out\n") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/bash\n" + body)
    return str(path)


def count_requests(session: Session) -> Counter[str]:
    calls: Counter[str] = Counter()

    def record(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    session.aws.ddb.meta.events.register("provide-client-params.dynamodb.*", record)
    return calls


def test_api_and_cli_give_the_same_answers(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    client = JobClient(session)
    ids = client.submit(JobSpec(script=script(tmp_path), count=3, name="same"))
    sid = ("--session", session.id)
    assert cli("status", "--json", *sid).json() == as_dicts(client.status())
    assert cli("status", "--json", ids[1], *sid).json() == as_dicts(client.status([ids[1]]))
    assert cli("status", "--json", "--name", "same", *sid).json() == as_dicts(
        client.status(name="same")
    )
    Pool(session).start("local", 1)
    client.wait(ids, timeout=60)
    assert cli("status", "--json", *sid).json() == as_dicts(client.status())
    assert cli("logs", "--json", ids[0], *sid).json() == client.logs(ids[0])
    events = cli("events", "--json", *ids, *sid).json()
    assert events == [e.public() for e in client.events(ids)]
    fetched = cli("fetch", "--json", "-o", str(tmp_path / "cli"), *sid).json()
    assert sorted(Path(p).name for p in fetched) == sorted(ids)
    api = client.fetch(ids, tmp_path / "api")
    assert sorted(p.name for p in api) == sorted(ids)
    for job_id in ids:
        assert (tmp_path / "cli" / job_id / "stdout").read_text() == "out\n"
        assert (tmp_path / "api" / job_id / "stdout").read_text() == "out\n"


def test_status_of_a_session_uses_index_queries_never_a_scan(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    client = JobClient(session)
    ids = client.submit(JobSpec(script=script(tmp_path), count=120))
    calls = count_requests(session)
    rows = client.status()
    assert len(rows) == 120 and [r.id for r in rows] == ids
    assert calls["Scan"] == 0
    assert calls["Query"] <= len(JobState), calls
    calls.clear()
    client.status(ids[:50])
    assert dict(calls) == {"BatchGetItem": 1}
    calls.clear()
    client.status(state="queued")
    assert dict(calls) == {"Query": 1}


def test_fetch_is_resumable_and_skips_what_it_fetched(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    Pool(session).start("local", 1)
    client = JobClient(session)
    ids = client.submit(JobSpec(script=script(tmp_path), count=2))
    client.wait(ids, timeout=60)
    client.fetch(ids[:1], tmp_path / "out")
    (tmp_path / "out" / ids[0] / "stdout").write_text("changed locally\n")
    client.fetch(ids, tmp_path / "out")
    assert (tmp_path / "out" / ids[0] / "stdout").read_text() == "changed locally\n"
    assert (tmp_path / "out" / ids[1] / "stdout").read_text() == "out\n"
    kinds = [e.kind for e in client.events([ids[0]])]
    assert kinds.count("fetched") == 1


def test_cancel_by_filter_asks_for_yes_and_cancels_only_the_matches(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    client = JobClient(session)
    keep = client.submit(JobSpec(script=script(tmp_path), name="keep", count=2))
    drop = client.submit(JobSpec(script=script(tmp_path), name="drop", count=3))
    sid = ("--session", session.id)
    refused = cli("cancel", "--name", "drop", *sid)
    assert refused.code == 1 and "--yes" in refused.err
    assert all(r.state is JobState.QUEUED for r in client.status())
    done = cli("cancel", "--name", "drop", "--yes", "--json", *sid)
    assert done.json() == {job_id: "cancelled" for job_id in drop}
    assert {r.id for r in client.status(state="cancelled")} == set(drop)
    assert {r.id for r in client.status(state="queued")} == set(keep)
    unknown = cli("cancel", "nope.0", *sid).err
    assert unknown == f"clobi: error: no job nope.0 in session {session.id}\n"


def test_a_job_file_with_many_tables_and_counts(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    script(tmp_path, "a.sh")
    script(tmp_path, "b.sh")
    jobs = tmp_path / "jobs.toml"
    jobs.write_text(
        '[[job]]\nscript = "a.sh"\ncount = 2\npriority = 2\n'
        '[[job]]\nscript = "b.sh"\nname = "bee"\nenv = { MODE = "x" }\n'
    )
    result = cli("submit", str(jobs), "--json", "--session", session.id)
    assert result.code == 0, result.err
    rows = JobClient(session).status(result.json())
    assert [(r.name, r.priority) for r in rows] == [("a", 2), ("a", 2), ("bee", 1)]
    assert result.err == "", "no progress output off a terminal"
