"""What durable state costs: throughput on an endpoint that journals every change next to one
that keeps it in memory (alternating, in one run), and how long a large session takes to
restore after a kill -9 (snapshot and journal) and after a clean stop."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

from benchmarks.harness import bench
from benchmarks.scenarios import Figures, _clobi_throughput
from embedded import server as embedded
from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.lifecycle import create_session
from shared import localkeys
from shared.models import SessionConfig
from shared.records import JobState
from shared.session import Session


def durable_throughput(jobs: int = 2000, vms: int = 2) -> Figures:
    """The throughput scenario's clobi half, on an in-memory endpoint then a durable one."""
    figures: Figures = {}
    for name, durable in (("memory", False), ("durable", True)):
        with bench(vms=vms, cores=2, durable=durable) as b:
            script = b.script("noop.sh", "printf '%01024d' 0\n")
            run = _clobi_throughput(b, script, jobs, rm=True)
            figures[f"{name} jobs/s"] = run["jobs/s"]
            figures[f"{name} endpoint cpu ms/job"] = run["endpoint cpu ms/job"]
    figures["durable/memory"] = figures["durable jobs/s"] / figures["memory jobs/s"]
    return figures


def restore(jobs: int = 100_000) -> Figures:
    """A session holding `jobs` queued jobs: seconds until a durable endpoint answers again
    after a kill -9 (last snapshot plus the journal since) and after a clean stop."""
    with tempfile.TemporaryDirectory(prefix="clobi-bench-") as tmp:
        home = Path(tmp)
        old = os.environ.get("CLOBI_HOME")
        os.environ["CLOBI_HOME"] = str(home / "home")
        state = home / "state"

        def launch(port: int) -> tuple[int, str, float]:
            began = time.monotonic()
            proc, url = embedded.launch(
                port,
                ready_file=home / "ready.json",
                log_file=home / "endpoint.log",
                credentials=localkeys.default_path(),
                detach=False,
                timeout_s=600,
                state_dir=state,
            )
            return proc.pid, url, time.monotonic() - began

        pid, url, _ = launch(0)
        port = int(url.rsplit(":", 1)[1])
        try:
            session = Session(create_session(SessionConfig(name="restore", endpoint_url=url)))
            began = time.monotonic()
            JobClient(session).submit(JobSpec(script=_noop(home), count=jobs))
            figures: Figures = {"submit seconds": time.monotonic() - began}
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pid, url, figures["restore after kill -9 s"] = launch(port)
            figures["queued after restore"] = session.jobs.count_state(JobState.QUEUED)
            figures["state MB"] = _size(state) / 1e6
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
            pid, url, figures["restore after stop s"] = launch(port)
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            if old is None:
                os.environ.pop("CLOBI_HOME", None)
            else:
                os.environ["CLOBI_HOME"] = old
        return figures


def _noop(home: Path) -> str:
    path = home / "noop.sh"
    path.write_text("#!/bin/bash\ntrue\n")
    return str(path)


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
