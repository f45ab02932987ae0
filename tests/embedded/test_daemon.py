"""The embedded endpoint keeps its state in memory: stopping it with live sessions is refused
unless forced, and a session lost with it is named as such, with what to do."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import cli


@pytest.fixture
def local_endpoint(clobi_home: Path) -> Iterator[str]:
    (clobi_home / "local" / "credentials").unlink()  # the suite's: this endpoint makes its own
    with socket.socket() as probe:  # a free port, to start it on the same URL again
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    assert cli("local", "up", "--port", port).code == 0
    yield port
    cli("local", "down", "--force")


def test_a_lost_session_is_named_and_down_refuses_while_sessions_live(
    tmp_path: Path, local_endpoint: str
) -> None:
    config = tmp_path / "session.toml"
    config.write_text('name = "lost"\nendpoint_url = "local"\n')
    created = cli("session", "create", str(config))
    assert created.code == 0, created.err
    session = created.out.split()[-1]

    refused = cli("local", "down")
    assert refused.code == 1 and refused.err.count("\n") == 1, refused.err
    assert session in refused.err and "--force" in refused.err
    assert cli("local", "status").code == 0  # still running

    assert cli("local", "down", "--force").code == 0
    down = cli("status", "--session", session)
    assert down.code == 1 and "does not answer" in down.err and "clobi local up" in down.err
    assert cli("local", "up", "--port", local_endpoint).code == 0  # a new, empty endpoint
    status = cli("status", "--session", session)
    assert status.code == 1 and status.err.count("\n") == 1, status.err
    assert "no longer exists" in status.err and "clobi session cleanup" in status.err
    listed = cli("session", "list", "--json")
    assert [(r["id"], r["state"]) for r in listed.json()] == [(session, "gone")]

    cleaned = cli("session", "cleanup", "--yes", "--session", session)
    assert cleaned.code == 0, cleaned.err
    assert cli("session", "list", "--json").json() == []
    assert cli("local", "down").code == 0  # nothing lives on it now
