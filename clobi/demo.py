"""`clobi demo`: the event-generation session of the AWSAC paper on a small scale, end to end.

A private embedded endpoint, a session with release 14.2.10, two local VMs of two cores, four
jobs, results fetched into ./clobi-demo-results/, then everything it started is removed.
"""

from __future__ import annotations

import argparse
import os
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from embedded import server as embedded
from jobmgmt.cli import show_table
from jobmgmt.client import JobClient, summary
from resource_manager.lifecycle import cleanup_session, create_session
from resource_manager.pool import Pool
from shared import localkeys
from shared.cli import Progress
from shared.config import load_job_file
from shared.errors import ClobiError
from shared.models import LocalCloud, ReleaseConfig, SessionConfig
from shared.records import JobState
from shared.session import Session

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "eventgen"
RESULTS = Path("clobi-demo-results")


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="the main job: embedded AWS, a session, local VMs, sample jobs, results",
        description="Run the event-generation demo: start a private embedded AWS endpoint, "
        "create a session with release 14.2.10, start two local VMs, run four "
        "generator jobs, fetch their results, and clean everything up.",
    )
    parser.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        default=RESULTS,
        metavar="DIR",
        help=f"where results go (default ./{RESULTS})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300,
        metavar="SECONDS",
        help="give up waiting for the jobs after this (default 300)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not (EXAMPLE / "jobs.toml").exists():
        raise ClobiError(
            f"demo inputs not found at {EXAMPLE} (run from a clobi checkout "
            "installed with `pip install -e .`)"
        )
    say = Progress(enabled=True).line
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="clobi-demo-") as tmp, _home(Path(tmp)):
        with _endpoint(Path(tmp), say) as url:
            rows = _session(url, Path(tmp), args, say)
    show_table(rows)
    print(summary(rows))
    say(f"results in {args.output_dir}/ ({time.monotonic() - started:.0f} s in all)")
    return 0 if all(r.state is JobState.SUCCEEDED for r in rows) else 1


@contextmanager
def _home(path: Path) -> Iterator[None]:
    """The demo keeps its session files and VMs apart from the user's own."""
    old = os.environ.get("CLOBI_HOME")
    os.environ["CLOBI_HOME"] = str(path / "home")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CLOBI_HOME", None)
        else:
            os.environ["CLOBI_HOME"] = old


@contextmanager
def _endpoint(tmp: Path, say: Any) -> Iterator[str]:
    proc, url = embedded.launch(
        0,
        ready_file=tmp / "endpoint.json",
        log_file=tmp / "endpoint.log",
        credentials=localkeys.default_path(),  # of the demo's own CLOBI_HOME
        detach=True,  # a Ctrl-C at the terminal is the demo's to handle: it cleans up first
    )
    say(f"[1/6] embedded AWS endpoint up at {url}")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        say("      embedded endpoint stopped")


def _session(url: str, tmp: Path, args: argparse.Namespace, say: Any) -> list[Any]:
    archive = tmp / "release-14.2.10.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted((EXAMPLE / "release").rglob("*")):
            tar.add(path, arcname=path.relative_to(EXAMPLE / "release"), recursive=False)
    config = SessionConfig(
        name="eventgen",
        endpoint_url=url,
        heartbeat_s=1,
        lease_s=30,
        releases={"14.2.10": ReleaseConfig(archive=str(archive))},
        clouds=(LocalCloud(name="local", driver="local", cores_per_vm=2, max_vms=2),),
    )
    info = create_session(config)
    session = Session(info)
    say(f"[2/6] session {info.id}: queues p1..p3, tables, release 14.2.10 uploaded")
    pool = Pool(session)
    try:
        vms = pool.start("local", 2)
        say(f"[3/6] started 2 local VMs of 2 cores: {', '.join(vms)}")
        client = JobClient(session)
        ids = client.submit(load_job_file(EXAMPLE / "jobs.toml"), token="demo")
        say(f"[4/6] submitted {len(ids)} jobs: gen_30.sh x2, gen_1000.sh x2")
        last = [""]

        def report(line: str) -> None:
            if line != last[0]:
                say(f"      {line}")
                last[0] = line

        rows = client.wait(ids, timeout=args.timeout, progress=report, poll_s=0.5)
        paths = client.fetch(ids, args.output_dir)
        say(f"[5/6] fetched {len(paths)} result sandboxes into {args.output_dir}/")
        pool.drain(vms)
        _wait_gone(pool, timeout_s=30)
        return rows
    finally:
        pool.terminate_all()
        removed = cleanup_session(info)
        say(
            f"[6/6] cleaned up: VMs stopped, {removed['queues']} queues, {removed['tables']} "
            f"tables, {removed['objects']} S3 objects deleted"
        )


def _wait_gone(pool: Pool, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(
            i.alive
            for c in pool.session.info.config.clouds
            for i in pool.driver(c.name).instances()
        ):
            return
        time.sleep(0.2)
