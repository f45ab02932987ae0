"""One embedded endpoint (clobi's own launcher) per test run, reset before each test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from embedded import server as embedded
from resource_manager.drivers.local import session_root
from resource_manager.lifecycle import create_session
from resource_manager.pool import Pool
from shared import localkeys
from shared.errors import ClobiError
from shared.home import private_dir
from shared.models import LocalCloud, SessionConfig
from shared.session import Session
from tests.faults.state import lose_state

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
)
os.environ.pop("CLOBI_SESSION", None)


@pytest.fixture(scope="session")
def endpoint_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test endpoint's key pair; every test's CLOBI_HOME gets a copy, as `clobi local up`
    leaves one in the user's."""
    path = tmp_path_factory.mktemp("keys") / "credentials"
    localkeys.ensure(path)
    return path


@pytest.fixture(scope="session")
def endpoint(tmp_path_factory: pytest.TempPathFactory, endpoint_keys: Path) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("endpoint")
    proc, url = embedded.launch(
        0,
        ready_file=tmp / "ready.json",
        log_file=tmp / "endpoint.log",
        credentials=endpoint_keys,
        detach=False,
    )
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(autouse=True)
def clobi_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoint_keys: Path) -> Path:
    home = tmp_path / "clobi-home"
    monkeypatch.setenv("CLOBI_HOME", str(home))
    private_dir(home / "local")
    shutil.copy(endpoint_keys, home / "local" / "credentials")
    return home


@pytest.fixture
def aws_endpoint(endpoint: str) -> str:
    """The endpoint, emptied of every earlier test's state."""
    lose_state(endpoint)
    return endpoint


@pytest.fixture
def make_session(aws_endpoint: str) -> Iterator[Callable[..., Session]]:
    """Create sessions on the endpoint; their local VMs are killed at the end of the test."""
    sessions: list[Session] = []

    def make(**overrides: Any) -> Session:
        values: dict[str, Any] = {
            "name": "test",
            "endpoint_url": aws_endpoint,
            "heartbeat_s": 0.5,
            "lease_s": 6,
            "clouds": (LocalCloud(name="local", driver="local", cores_per_vm=2, max_vms=4),),
        }
        values.update(overrides)
        session = Session(create_session(SessionConfig(**values)))
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        try:
            Pool(session).terminate_all()
        except ClobiError as err:  # a test's unreachable cloud: its local VMs are gone anyway
            print(f"cleanup of {session.id}: {err}")
        for log in sorted(session_root(session.id).glob("*/console.log")):
            print(f"--- {log.parent.name} ---\n{log.read_text()[-4000:]}")


@pytest.fixture
def resource_manager() -> Iterator[Callable[[Session], Any]]:
    """Start `clobi rm --headless` processes; stopped at the end of the test."""
    from tests.helpers import clobi_process, stop_process

    procs = []

    def start(session: Session) -> Any:
        proc = clobi_process("rm", "--headless", "--interval", "0.5", "--session", session.id)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        _, err = stop_process(proc)
        print(f"--- clobi rm --headless (exit {proc.returncode}) ---\n{err}")


@pytest.fixture
def local_daemon(clobi_home: Path) -> Iterator[str]:
    """`clobi local up` as a user runs it, in this test's home (on a free port, so it can be
    started again on the same URL); its port. Stopped, and its sessions' VMs, at the end."""
    import socket

    from tests.helpers import cli

    (clobi_home / "local" / "credentials").unlink()  # the suite's: this endpoint makes its own
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    up = cli("local", "up", "--port", port)
    assert up.code == 0, up.err
    yield port
    for session in (clobi_home / "sessions").glob("*.json"):
        cli("session", "cleanup", "--yes", "--session", session.stem)
    cli("local", "down")
    log = clobi_home / "local" / "endpoint.log"
    if log.exists():
        print(f"--- endpoint.log ---\n{log.read_text()[-4000:]}")
