"""Fixtures of the reliability tests: a fault proxy and a session behind it (the fault tests);
for the bad-input tests (test_bad_*.py), one session shared by a module's tests and a folder
to submit from."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.lifecycle import create_session
from shared import sessionfile
from shared.aws import Aws
from shared.home import private_dir
from shared.models import LocalCloud, SessionConfig
from shared.session import Session
from tests.faults.proxy import FaultProxy
from tests.faults.state import lose_state
from tests.reliability.bad_input import Shared


@pytest.fixture(scope="module")
def shared(endpoint: str, endpoint_keys: Path, tmp_path_factory: pytest.TempPathFactory) -> Shared:
    """One session for the module (a fresh one a test would cost seconds): priorities 1..3,
    local VMs of 2 cores, no release, and one queued job named `keep`. Every test checks that
    the endpoint holds the same before and after, so they may share it."""
    home = tmp_path_factory.mktemp("bad-input")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLOBI_HOME", str(home / "clobi-home"))
        private_dir(home / "clobi-home" / "local")
        shutil.copy(endpoint_keys, home / "clobi-home" / "local" / "credentials")
        lose_state(endpoint)
        config = SessionConfig(
            name="bad",
            endpoint_url=endpoint,
            clouds=(LocalCloud(name="local", driver="local", cores_per_vm=2, max_vms=4),),
        )
        session = Session(create_session(config))
        file = str(sessionfile.path_for(session.id))
        script = home / "a.sh"
        script.write_text("true\n")
        JobClient(session).submit(JobSpec(script=str(script), name="keep"))
    return Shared(session, file)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder with a script, an input file and a directory holding another `in.txt`."""
    work = tmp_path / "work"
    (work / "d").mkdir(parents=True)
    (work / "a.sh").write_text("#!/bin/bash\necho hi\n")
    (work / "in.txt").write_text("input\n")
    (work / "d" / "in.txt").write_text("another\n")
    return work


@pytest.fixture
def proxy(aws_endpoint: str) -> Iterator[FaultProxy]:
    """A fault proxy in front of the endpoint (tests/faults/README.md)."""
    with FaultProxy(aws_endpoint) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def faulty(
    proxy: FaultProxy, aws_endpoint: str, make_session: Callable[..., Session]
) -> Callable[..., tuple[Session, Session]]:
    """A session whose components go through the proxy, and the same session seen directly."""

    def make(**overrides: Any) -> tuple[Session, Session]:
        session = make_session(endpoint_url=proxy.url, **overrides)
        return session, Session(session.info, Aws(session.info.region, aws_endpoint))

    return make
