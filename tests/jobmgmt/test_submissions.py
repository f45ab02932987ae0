"""A token is bound to its whole submission, and a submit never returns another's ids."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from shared import naming
from shared.errors import ValidationError
from shared.session import Session
from tests.helpers import cli


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


def _all_ids(client: JobClient) -> list[str]:
    return sorted(row.id for row in client.status())


def test_a_token_reused_for_another_submission_is_refused_and_creates_nothing(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    a, b = _script(tmp_path, "a.sh", "echo a\n"), _script(tmp_path, "b.sh", "echo b\n")
    sid = ("--session", session.id)
    first = cli("submit", "--script", a, "--count", "2", "--token", "T", *sid)
    assert first.code == 0, first.err
    ids = first.out.split()
    assert len(ids) == 2

    other = cli("submit", "--script", b, "--count", "5", "--token", "T", *sid)
    assert other.code != 0 and other.out == ""
    assert other.err.count("\n") == 1 and "'T'" in other.err, other.err
    client = JobClient(session)
    assert _all_ids(client) == sorted(ids)

    # The same scripts with other options or another count are another submission too...
    for change in (["--count", "3"], ["--priority", "2"], ["--output", "*.txt"]):
        refused = cli("submit", "--script", a, "--count", "2", "--token", "T", *sid, *change)
        assert refused.code != 0, change
    # ...and so is a script of the same name with other content.
    Path(a).write_text("echo changed\n")
    assert cli("submit", "--script", a, "--count", "2", "--token", "T", *sid).code != 0
    Path(a).write_text("echo a\n")

    again = cli("submit", "--script", a, "--count", "2", "--token", "T", *sid)
    assert (again.code, again.out.split()) == (0, ids)
    assert _all_ids(client) == sorted(ids)

    with pytest.raises(ValidationError, match="token 'T'"):
        client.submit(JobSpec(script=b, count=5), token="T")
    assert client.submit(JobSpec(script=a, count=2), token="T") == ids
    assert _all_ids(client) == sorted(ids)


def test_a_random_batch_id_that_exists_is_drawn_again(
    tmp_path: Path, make_session: Callable[..., Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    session = make_session()
    client = JobClient(session)
    draws = iter(["deadbeef", "deadbeef", "cafef00d"])
    real = naming.secrets.token_hex
    # Random batch ids (4 bytes) drawn from a list; every other use of token_hex unchanged.
    monkeypatch.setattr(naming.secrets, "token_hex", lambda n: next(draws) if n == 4 else real(n))
    theirs = client.submit(JobSpec(script=_script(tmp_path, "a.sh", "echo a\n"), count=3))
    mine = client.submit(JobSpec(script=_script(tmp_path, "b.sh", "echo b\n"), count=2))
    assert theirs == ["deadbeef.0", "deadbeef.1", "deadbeef.2"]
    assert mine == ["cafef00d.0", "cafef00d.1"]
    assert {row.name for row in client.status(theirs)} == {"a"}
    assert {row.name for row in client.status(mine)} == {"b"}


def test_fetch_brings_succeeded_results_only_unless_asked_and_says_what_it_skipped(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    from resource_manager.pool import Pool
    from shared.records import JobState
    from tests.helpers import wait_until

    session = make_session(max_attempts=1)
    Pool(session).start("local", 1)
    client = JobClient(session)
    (ok,) = client.submit(
        JobSpec(script=_script(tmp_path, "ok.sh", "echo ok > out.txt\n"), outputs=("out.txt",))
    )
    (bad,) = client.submit(
        JobSpec(
            script=_script(tmp_path, "bad.sh", "echo half > out.txt\nexit 3\n"),
            outputs=("out.txt",),
        )
    )
    (long,) = client.submit(
        JobSpec(
            script=_script(tmp_path, "long.sh", "echo partial > out.txt\nsleep 60\n"),
            outputs=("out.txt",),
        )
    )
    wait_until(lambda: client.status([long])[0].state is JobState.RUNNING, 30, what="running")
    client.wait([ok, bad], timeout=30)
    waiting = cli("fetch", "-o", str(tmp_path / "early"), "--session", session.id)
    assert waiting.code == 0 and "1 unfinished" in waiting.err, waiting.err
    client.cancel([long])
    client.wait([long], timeout=30)

    plain = cli("fetch", "-o", str(tmp_path / "r"), "--session", session.id)
    assert plain.code == 0 and plain.out.split() == [str(tmp_path / "r" / ok)]
    assert "skipped 2 jobs: 1 cancelled, 1 failed" in plain.err, plain.err
    assert not (tmp_path / "r" / bad).exists() and not (tmp_path / "r" / long).exists()

    every = cli("fetch", "-o", str(tmp_path / "r"), "--unsuccessful", "--session", session.id)
    assert every.code == 0, every.err
    assert (tmp_path / "r" / "failed" / bad / "out.txt").read_text() == "half\n"
    assert (tmp_path / "r" / "cancelled" / long / "out.txt").read_text() == "partial\n"
    assert not (tmp_path / "r" / bad).exists()
