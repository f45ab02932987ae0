"""`clobi local down` and `up` keep every session: the state is on disk, restored on the URL
its sessions know; a session whose state is gone anyway is named as such, with what to do."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers import cli, session_from_cli, wait_until

CONFIG = """name = "kept"
endpoint_url = "local"
heartbeat_s = 0.5
lease_s = 6

[[clouds]]
name = "local"
driver = "local"
cores_per_vm = 2
max_vms = 4
"""


def create(tmp_path: Path) -> str:
    return session_from_cli(tmp_path, CONFIG)


def test_down_then_up_keeps_the_session_and_status_is_identical(
    tmp_path: Path, local_daemon: str
) -> None:
    session = create(tmp_path)
    script = tmp_path / "job.sh"
    script.write_text('#!/bin/bash\necho "$CLOBI_JOB_ID" > out.txt\n')
    assert cli("vm", "start", "local", "-n", "2", "--session", session).code == 0
    submit = ("--script", str(script), "--count", "6", "--output", "out.txt")
    assert cli("submit", *submit, "--session", session).code == 0
    assert cli("wait", "--timeout", "120", "--session", session).code == 0
    before = cli("status", "--json", "--session", session)
    assert before.code == 0, before.err

    assert cli("local", "down").code == 0  # no refusal: nothing is lost
    down = cli("status", "--session", session)
    assert down.code == 1 and "does not answer" in down.err and "clobi local up" in down.err
    assert cli("local", "up").code == 0  # the port its state was served on
    after = cli("status", "--json", "--session", session)
    assert after.code == 0, after.err
    assert after.json() == before.json()
    fetched = cli("fetch", "-o", str(tmp_path / "results"), "--session", session)
    assert fetched.code == 0, fetched.err
    outs = sorted((tmp_path / "results").glob("*/out.txt"))
    assert [p.read_text().strip() for p in outs] == [p.parent.name for p in outs]
    assert len(outs) == 6

    status = cli("local", "status", "--json").json()
    assert status["running"] and status["url"].endswith(f":{local_daemon}")
    assert status["state"]["bytes"] > 0
    wait_until(  # the restore's replayed journal is compacted into a snapshot
        lambda: cli("local", "status", "--json").json()["state"]["snapshot_age_s"] is not None,
        timeout=30,
        what="a snapshot",
    )
    shown = cli("local", "status")
    assert "MiB in" in shown.out and "last snapshot" in shown.out


def test_a_session_whose_state_is_gone_is_named_and_can_be_forgotten(
    tmp_path: Path, local_daemon: str, clobi_home: Path
) -> None:
    session = create(tmp_path)
    assert cli("local", "down").code == 0
    shutil.move(clobi_home / "local" / "state", tmp_path / "moved-away")
    assert cli("local", "up", "--port", local_daemon).code == 0  # new and empty, same URL
    status = cli("status", "--session", session)
    assert status.code == 1 and status.err.count("\n") == 1, status.err
    assert "no longer exists" in status.err and "clobi session cleanup" in status.err
    listed = cli("session", "list", "--json")
    assert [(r["id"], r["state"]) for r in listed.json()] == [(session, "gone")]
    cleaned = cli("session", "cleanup", "--yes", "--session", session)
    assert cleaned.code == 0, cleaned.err
    assert cli("session", "list", "--json").json() == []
