"""`clobi demo`, as a new user runs it: a real subprocess in an empty directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def test_demo_runs_four_jobs_fetches_results_and_leaves_no_process(tmp_path: Path) -> None:
    env = dict(os.environ, CLOBI_HOME=str(tmp_path / "home"))
    before = set(_agent_processes())
    assert before == set()
    result = subprocess.run(
        [sys.executable, "-m", "clobi", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "4 jobs: 4 succeeded" in result.stdout
    results = tmp_path / "clobi-demo-results"
    jobs = sorted(results.iterdir())
    assert len(jobs) == 4
    events = sorted(p.name for job in jobs for p in job.glob("events_*.dat"))
    assert events == ["events_1000.dat", "events_1000.dat", "events_30.dat", "events_30.dat"]
    for job in jobs:
        data = next(job.glob("events_*.dat")).read_text().splitlines()
        count = int(next(job.glob("events_*.dat")).stem.split("_")[1])
        assert len(data) == count + 1  # a header and one line per event
        assert "generator 14.2.10" in next(job.glob("gen_*.log")).read_text()
    assert set(_agent_processes()) == before
    assert not list((tmp_path / "home").glob("sessions/*.json"))


def _interruptible() -> None:
    """SIGINT as a terminal's foreground job has it: a run in the background of a
    non-interactive shell (a CI script, say) inherits it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _agent_processes() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            # The demo's own (its temporary folder is clobi-demo-*), not other runs' on this host.
            ours = b"clobi-demo-" in cmdline
            if ours and (b"job_agent" in cmdline or b"embedded.server" in cmdline):
                found.append(int(entry.name))
    return found


def test_ctrl_c_in_the_demo_cleans_up_quietly_and_exits_130(tmp_path: Path) -> None:
    from tests.helpers import wait_until

    env = dict(os.environ, CLOBI_HOME=str(tmp_path / "home"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "clobi", "demo"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        preexec_fn=_interruptible,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("[4/6]"):  # jobs submitted, VMs running
            break
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
    rest = proc.stderr.read()
    assert proc.wait(60) == 130, "".join(seen) + rest
    assert "error" not in rest.lower() and "Traceback" not in rest, rest
    assert "interrupted" in rest and "cleaned up" in rest, rest
    wait_until(lambda: not _agent_processes(), 10, what="no demo process left")
