"""What every scenario needs: a private endpoint, a session, local VMs, figures and stats."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedded import daemon as endpoint
from embedded import server as embedded
from jobmgmt.client import JobClient
from resource_manager.lifecycle import create_session
from resource_manager.pool import Pool
from shared import localkeys
from shared.models import LocalCloud, SessionConfig
from shared.records import JobState
from shared.session import Session
from shared.transitions import pending_key


@dataclass
class Bench:
    """One scenario run's world: endpoint URL and process, a temp home, the session."""

    url: str
    endpoint_pid: int
    home: Path
    session: Session
    client: JobClient
    pool: Pool

    def stats(self, reset: bool = False) -> dict[str, Any]:
        return endpoint.stats(self.url, reset=reset)

    def script(self, name: str, body: str) -> str:
        path = self.home / name
        path.write_text("#!/bin/bash\n" + body)
        return str(path)

    def start_vms(self, count: int) -> list[str]:
        ids = self.pool.start("local", count)
        wait_for(lambda: sum(v.state == "running" for v in self.pool.vms()) >= count, 60)
        return ids


@contextmanager
def bench(vms: int = 0, cores: int = 2, durable: bool = False, **config: Any) -> Iterator[Bench]:
    """A fresh endpoint (`durable`: keeping its state on disk, as `clobi local up` runs it),
    home and session; everything is torn down at the end."""
    with tempfile.TemporaryDirectory(prefix="clobi-bench-") as tmp:
        home = Path(tmp)
        old = os.environ.get("CLOBI_HOME")
        os.environ["CLOBI_HOME"] = str(home / "home")
        proc, url = embedded.launch(
            0,
            ready_file=home / "ready.json",
            log_file=home / "endpoint.log",
            credentials=localkeys.default_path(),
            detach=False,
            state_dir=home / "state" if durable else None,
        )
        try:
            values: dict[str, Any] = {
                "name": "bench",
                "endpoint_url": url,
                "clouds": (
                    LocalCloud(name="local", driver="local", cores_per_vm=cores, max_vms=16),
                ),
            }
            values.update(config)
            session = Session(create_session(SessionConfig(**values)))
            world = Bench(url, proc.pid, home, session, JobClient(session), Pool(session))
            try:
                if vms:
                    world.start_vms(vms)
                yield world
            finally:
                world.pool.terminate_all()
        finally:
            proc.terminate()
            proc.wait(10)
            if old is None:
                os.environ.pop("CLOBI_HOME", None)
            else:
                os.environ["CLOBI_HOME"] = old


def wait_for(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark condition not met within {timeout_s} s")
        time.sleep(poll_s)


def wait_all_done(client: JobClient, timeout_s: float) -> None:
    """Wait until no job is pending, dispatched or running. Asks only about what is left,
    since counting the finished jobs would cost the endpoint more as they pile up (and so
    distort what we measure)."""
    jobs = client.session.jobs
    config = client.session.info.config

    def done() -> bool:
        if jobs.count_sent() or jobs.count_state(JobState.RUNNING):
            return False
        if jobs.count_state(JobState.SAVING):
            return False
        return not any(
            next(jobs.by_dispatch(pending_key(p), limit=1), None)
            for p in range(1, config.priorities + 1)
        )

    wait_for(done, timeout_s, poll_s=1.0)


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Figure:
    """One measured quantity over several runs: reported as median and min-max."""

    name: str
    unit: str
    values: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "runs": len(self.values),
            "median": statistics.median(self.values) if self.values else None,
            "min": min(self.values, default=None),
            "max": max(self.values, default=None),
        }
