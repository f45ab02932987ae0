"""Bad command-line arguments: usage errors the argparse way, unknown or malformed job ids,
bad values, no usable session; each one clear error that changes nothing, in a real
process too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobmgmt.client import JobClient
from tests.helpers import cli
from tests.reliability.bad_input import (
    JOB,
    LOCAL,
    Shared,
    assert_one_error_line,
    assert_usage_error,
    contents,
)

USAGE_ERRORS: list[list[str]] = [
    [],
    ["frobnicate"],
    ["--session"],
    ["submit", "--bogus"],
    ["submit", "--script", "a.sh", "--count", "ten"],
    ["submit", "--script", "a.sh", "--cores", "1.5"],
    ["wait", "--timeout", "-1"],
    ["wait", "--timeout", "nan"],
    ["wait", "--timeout", "soon"],
    ["status", "--state", "bogus"],
    ["cancel", "--state", "succeeded"],
    ["events"],
    ["logs"],
    ["logs", "a.0", "b.0"],
    ["session"],
    ["session", "create"],
    ["session", "frobnicate"],
    ["vm", "start"],
    ["vm", "start", "local", "-n", "some"],
    ["vm", "drain"],
    ["vm", "kill"],
    ["autoscale", "maybe"],
    ["rm", "--interval", "0"],
    ["rm", "--interval", "-5"],
    ["local", "up", "--port", "70000"],
    ["local", "up", "--port", "-1"],
    ["simulate", "--trace", "t.csv"],
]


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=" ".join)
def test_malformed_arguments_are_usage_errors(args: list[str]) -> None:
    assert_usage_error(cli(*args))


UNKNOWN = "0123abcd.7"
MALFORMED_IDS = ["", "abc", "../../etc/passwd", "a b.0", "abc.0\n", "x" * 5000 + ".0", "É.0"]
JOB_COMMANDS = [["status"], ["wait", "--timeout", "0"], ["cancel"], ["fetch"], ["logs"], ["events"]]


@pytest.mark.parametrize("command", JOB_COMMANDS, ids=lambda c: c[0])
def test_unknown_and_malformed_job_ids_are_one_line_for_every_job_command(
    tmp_path: Path,
    shared: Shared,
    endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # where `fetch` would write
    (known,) = JobClient(shared.session).status(name="keep")
    sid = shared.arg
    before = contents(endpoint)
    assert_one_error_line(cli(*command, UNKNOWN, *sid), f"no job {UNKNOWN} in session")
    for job_id in MALFORMED_IDS:
        assert_one_error_line(cli(*command, job_id, *sid), "malformed job id")
    if command[0] != "logs":  # known first, then unknown: nothing is done for the known one
        assert_one_error_line(cli(*command, known.id, UNKNOWN, *sid), f"no job {UNKNOWN}")
    assert contents(endpoint) == before
    assert not (tmp_path / known.id).exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["submit", "--script", "a.sh", "--count", "0"], "arguments: count: "),
        (["submit", "--script", "a.sh", "--count", "-1"], "arguments: count: "),
        (["submit", "--script", "a.sh", "--priority", "9"], "priority 9 is out of range"),
        (["submit", "--script", "a.sh", "--walltime", "0"], "arguments: walltime: "),
        (["submit", "--script", "a.sh", "--cores", "0"], "arguments: cores: "),
        (["submit", "--script", "a.sh", "--max-attempts", "0"], "arguments: max_attempts: "),
        (["submit", "--script", "a.sh", "--output", "../up"], "output pattern '../up'"),
        (["submit", "--script", "a.sh", "--input", "nope"], "input nope"),
        (["submit", "--script", "a.sh", "--release", "9.9"], "release '9.9'"),
        (["submit", "--script", "nope.sh"], "script nope.sh: no such file"),
        (["submit"], "nothing to submit"),
        (["submit", "jobs.toml", "--script", "a.sh"], "not both"),
        (["submit", "jobs.toml", "--count", "0"], "jobs.toml: count: "),
        (["cancel"], "nothing to cancel"),
        (["cancel", UNKNOWN, "--state", "queued"], "not both"),
        (["cancel", "--name", "keep"], "--yes"),
        (["vm", "start", "local", "-n", "0"], "--count must be at least 1"),
        (["vm", "start", "nowhere"], "unknown cloud 'nowhere'"),
        (["session", "cleanup"], "--yes"),
        (["simulate", "--trace", "nope.csv", "--config", "s.toml"], "nope.csv: cannot read"),
        (["simulate", "--trace", "bad.csv", "--config", "s.toml"], "bad.csv:2: expected"),
        (["simulate", "--trace", "latin1.csv", "--config", "s.toml"], "latin1.csv: "),
        (["simulate", "--trace", "t.csv", "--config", "nope.toml"], "nope.toml: no such file"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_arguments_are_one_error_line_and_change_nothing(
    work: Path,
    shared: Shared,
    endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    expected: str,
) -> None:
    (work / "jobs.toml").write_text(JOB)
    (work / "s.toml").write_text('name = "sim"\n' + LOCAL)
    (work / "t.csv").write_text("arrival_s,runtime_s\n0,10\n")
    (work / "bad.csv").write_text("arrival_s,runtime_s\nsoon,10\n")
    (work / "latin1.csv").write_bytes("arrival_s,runtime_s\n0,10 \xe9t\xe9\n".encode("latin-1"))
    monkeypatch.chdir(work)
    monkeypatch.setenv("CLOBI_SESSION", shared.file)
    before = contents(endpoint)
    assert_one_error_line(cli(*args), expected)
    assert contents(endpoint) == before


def test_commands_without_a_usable_session_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.sh").write_text("true\n")
    (tmp_path / "garbage.json").write_text("{not json")
    (tmp_path / "other.json").write_text('{"id": "x"}')
    for args, expected in [
        (["status"], "no session yet"),
        (["submit", "--script", str(tmp_path / "a.sh")], "no session yet"),
        (["vm", "list"], "no session yet"),
        (["status", "--session", "nope"], "no session 'nope'"),
        (["status", "--session", str(tmp_path / "none.json")], "no session file"),
        (["status", "--session", str(tmp_path) + "/"], "cannot read"),
        (["status", "--session", str(tmp_path / "garbage.json")], "not a clobi session file"),
        (["wait", "--session", str(tmp_path / "other.json")], "not a clobi session file"),
    ]:
        assert_one_error_line(cli(*args), expected)


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
        (["session", "create", "@CONFIG@"], 1, "priorites: unknown key"),
        (["status", "--session", "nope"], 1, "no session 'nope'"),
    ],
    ids=["usage", "config", "session"],
)
def test_a_real_clobi_process_fails_in_one_line_without_a_traceback(
    tmp_path: Path, args: list[str], code: int, expected: str
) -> None:
    config = tmp_path / "session.toml"
    config.write_text('name = "bad"\npriorites = 3\n')
    done = subprocess.run(
        [sys.executable, "-m", "clobi", *(str(config) if a == "@CONFIG@" else a for a in args)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (code, ""), done
    assert "Traceback" not in done.stderr and expected in done.stderr.splitlines()[-1]
    if code == 1:
        assert len(done.stderr.splitlines()) == 1, done.stderr
