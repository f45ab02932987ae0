"""No credential anywhere: a whole session lifecycle at debug log level, with canary
credentials in the environment of every component, then a search of every artifact: S3
objects (archives opened), table items, queue messages, session files, VM and agent logs,
the Resource Manager's log, fetched results, and what jobs saw in their environment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared import sessionfile
from shared.aws import Aws
from shared.session import Session
from tests.faults.invariants import assert_invariants
from tests.helpers import cli, wait_until

KEY_ID = "AKIACLOBICANARY00001"
SECRET = "clobi-canary-secret-0b1f6e0a9d4c"
TOKEN = "clobi-canary-session-token-77d2"
OTHER = "clobi-canary-user-secret-5e1a"  # a secret of the user's own, not AWS's


def test_no_canary_credential_in_any_artifact(
    tmp_path: Path, aws_endpoint: str, clobi_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (
        ("AWS_ACCESS_KEY_ID", KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_SESSION_TOKEN", TOKEN),
        ("MY_SERVICE_PASSWORD", OTHER),
        ("CLOBI_DEBUG", "1"),  # every component logs at debug level, local agents included
    ):
        monkeypatch.setenv(name, value)
    config = tmp_path / "session.toml"
    config.write_text(
        f'name = "secrets"\nendpoint_url = "{aws_endpoint}"\nheartbeat_s = 0.5\nlease_s = 6\n'
        '[[clouds]]\nname = "local"\ndriver = "local"\n'
        '[[clouds]]\nname = "aws"\ndriver = "ec2"\nami = "ami-12345678"\ninstall = "wheel"\n'
        'wheel = "' + str(_wheel(tmp_path)) + '"\n'
    )
    created = cli("session", "create", str(config))
    assert created.code == 0, created.err
    session_id = created.out.split()[-1]
    rm_log = tmp_path / "rm.log"
    with open(rm_log, "wb") as log:
        rm = subprocess.Popen(
            [sys.executable, "-m", "clobi", "rm", "--headless", "--interval", "0.5"],
            stdout=log,
            stderr=log,
        )
    try:
        assert cli("vm", "start", "local", "-n", "2").code == 0
        assert cli("vm", "start", "aws").code == 0  # renders user-data: searched below
        jobs = tmp_path / "jobs.toml"
        (tmp_path / "env.sh").write_text("env > env.txt\ncat /proc/self/environ > environ\n")
        (tmp_path / "fail.sh").write_text("echo failing >&2\nexit 3\n")
        (tmp_path / "slow.sh").write_text("sleep 100\n")
        jobs.write_text(
            '[[job]]\nscript = "env.sh"\noutputs = ["env.txt", "environ"]\ncount = 3\n'
            '[[job]]\nscript = "fail.sh"\nmax_attempts = 2\n'
            '[[job]]\nscript = "slow.sh"\nname = "slow"\n'
        )
        submitted = cli("submit", str(jobs))
        assert submitted.code == 0, submitted.err
        ids = submitted.out.split()
        slow = ids[-1]
        wait_until(
            lambda: cli("status", slow, "--json").json()[0]["state"] == "running",
            timeout=60,
            what="the slow job to run",
        )
        assert cli("cancel", slow).code == 0
        assert cli("wait", *ids, "--timeout", "90").code in (0, 1)  # one fails on purpose
        results = tmp_path / "results"
        assert cli("fetch", *ids, "-o", str(results)).code == 0
        assert cli("logs", ids[0]).code == 0
        assert cli("events", *ids).code == 0
        vms = cli("vm", "list", "--json").json()
        local = [v["id"] for v in vms if v["cloud"] == "local"]
        assert cli("vm", "drain", *local).code == 0
    finally:
        rm.terminate()
        rm.wait(30)

    info = sessionfile.resolve(session_id)
    direct = Session(info, Aws(info.region, aws_endpoint))
    canaries = (KEY_ID, SECRET, TOKEN, OTHER)
    assert_invariants(direct, canaries=canaries, home=clobi_home)
    for path in [rm_log, *results.rglob("*")]:
        if path.is_file():
            data = path.read_bytes()
            assert not any(c.encode() in data for c in canaries), f"a canary in {path}"
    # the search covered debug output, of the Resource Manager and of the agents
    assert "DEBUG" in rm_log.read_text()
    assert any("DEBUG" in log.read_text() for log in clobi_home.rglob("agent.log"))
    environ = next(results.rglob("environ")).read_bytes()
    assert b"CLOBI_JOB_ID=" in environ and b"AWS_" not in environ
    assert cli("session", "cleanup", "--yes").code == 0


def _wheel(tmp_path: Path) -> Path:
    """A stand-in wheel file (its content is not installed here; only uploaded and pinned)."""
    path = tmp_path / "clobi-0.1.0-py3-none-any.whl"
    path.write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    return path
