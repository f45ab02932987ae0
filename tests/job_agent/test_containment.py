"""Nothing a job starts outlives it (a process that sheds its group, session and environment
included), and its stdout and stderr never take more than max_log_bytes of the VM's disk."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.drivers.local import session_root
from resource_manager.pool import Pool
from shared.records import JobState
from shared.session import Session
from tests.helpers import cli, wait_until

# The job user is the agent's own: no slot user whose processes could all be killed. The job
# goes on once its process is `sleep`, out of its group, session and environment.
ESCAPE = (
    "setsid env -i sleep {marker} </dev/null >/dev/null 2>&1 &\n"
    "until tr '\\0' ' ' < /proc/$!/cmdline | grep -q '^sleep '; do sleep 0.01; done\n"
)
MARKERS: list[str] = []


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    """Whatever a failed test left running is killed."""
    yield
    for marker in MARKERS:
        for pid in escaped(marker):
            os.kill(pid, signal.SIGKILL)
    MARKERS.clear()


def _marker() -> str:
    """A sleep length no other test's process has: the escaped process is found by it."""
    MARKERS.append(f"{random.randint(10_000, 99_999)}.{random.randint(100, 999)}")
    return MARKERS[-1]


def escaped(marker: str) -> list[int]:
    """The live `sleep <marker>` processes of this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        if argv[:2] == [b"sleep", marker.encode()] and state != "Z":
            found.append(int(entry.name))
    return found


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "job.sh"
    path.write_text("#!/bin/bash\n" + body)
    return str(path)


def test_a_process_escaped_from_its_job_dies_when_the_job_ends(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session(max_attempts=1)
    Pool(session).start("local", 1)
    client = JobClient(session)
    marker = _marker()
    (job,) = client.submit(JobSpec(script=_script(tmp_path, ESCAPE.format(marker=marker))))
    (row,) = client.wait([job], timeout=60)
    assert row.state is JobState.SUCCEEDED, client.logs(job)
    assert not escaped(marker), "killed before the result is recorded"


def _running_escaper(tmp_path: Path, session: Session, client: JobClient) -> tuple[str, str]:
    """A job whose escaped process is alive, still running: (job, marker)."""
    marker = _marker()
    body = ESCAPE.format(marker=marker) + "sleep 1000\n"
    (job,) = client.submit(JobSpec(script=_script(tmp_path, body), max_attempts=1))
    wait_until(lambda: escaped(marker), timeout=60, what="the escaped process to run")
    return job, marker


def test_a_process_escaped_from_its_job_dies_when_the_job_is_cancelled(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    Pool(session).start("local", 1)
    client = JobClient(session)
    job, marker = _running_escaper(tmp_path, session, client)
    client.cancel([job])
    (row,) = client.wait([job], timeout=30)
    assert row.state is JobState.CANCELLED
    assert not escaped(marker)


def test_a_process_escaped_from_its_job_dies_with_a_killed_vm(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    (vm,) = Pool(session).start("local", 1)
    client = JobClient(session)
    _, marker = _running_escaper(tmp_path, session, client)
    result = cli("vm", "kill", vm, "--session", session.id)
    assert result.code == 0, result.err
    assert not escaped(marker)


RUNNER = """\
import sys
from pathlib import Path
from job_agent.containment import AdoptedJail, jail
from job_agent.runner import JobProcess
from shared.records import JobTask
work = Path(sys.argv[1])
task = JobTask(id="c0ffee00.0", name="escape", script="job.sh", sandbox_key="k",
               attempt=1, max_attempts=1)
kind = {"cgroup": jail, "subreaper": AdoptedJail}[sys.argv[2]]
env = {"PATH": "/usr/bin:/bin", "CLOBI_JOB_ID": task.id, "CLOBI_ATTEMPT": "1"}
JobProcess(task, work, env, work.parent / "out", work.parent / "err", jail=kind).wait()
"""


@pytest.mark.parametrize("kind", ["cgroup", "subreaper"])
def test_each_kind_of_jail_kills_what_escaped_its_job(tmp_path: Path, kind: str) -> None:
    """The runner with either jail: a cgroup, or (where none can be made) the agent as the
    subreaper of what escapes."""
    if kind == "cgroup" and not _cgroup_possible():
        pytest.skip("no cgroup v2 this process may divide")
    work = tmp_path / "work"
    work.mkdir()
    marker = _marker()
    (work / "job.sh").write_text(ESCAPE.format(marker=marker) + "sleep 0.2\n")
    ran = subprocess.run(
        [sys.executable, "-c", RUNNER, str(work), kind], capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert not escaped(marker)


def _cgroup_possible() -> bool:
    from shared import cgroup

    return cgroup.own() is not None


def test_output_past_max_log_bytes_is_never_kept_on_disk_and_the_result_says_it_was_cut(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    cap = 64 * 1024
    session = make_session(max_log_bytes=cap, max_attempts=1)
    (vm,) = Pool(session).start("local", 1)
    client = JobClient(session)
    body = (
        "head -c 20000000 /dev/zero | tr '\\0' x\n"  # 20 MB, 300 times the cap
        "head -c 200000 /dev/zero > big.bin\n"  # its own outputs are not capped
        "touch printed\n"
        "while [ ! -e go ]; do sleep 0.05; done\n"
    )
    (job,) = client.submit(JobSpec(script=_script(tmp_path, body), outputs=("big.bin",)))
    jobs = session_root(session.id) / vm / "work" / "jobs"
    printed = wait_until(
        lambda: next(jobs.glob("*/printed"), None), timeout=60, what="the job to print"
    )
    stdout = printed.parent.with_name(printed.parent.name + ".logs") / "stdout"
    assert stdout.stat().st_size <= cap + 100, "the rest never reached the disk"
    (printed.parent / "go").touch()
    (row,) = client.wait([job], timeout=60)
    assert row.state is JobState.SUCCEEDED, client.logs(job)
    out = client.logs(job)["stdout"]
    assert out == "x" * cap + f"\n[clobi: stdout truncated at {cap} bytes]\n"
    (result,) = client.fetch([job], tmp_path / "results")
    assert (result / "big.bin").stat().st_size == 200000
