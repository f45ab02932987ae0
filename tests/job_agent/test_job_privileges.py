"""A job holds no privilege of its agent's and reaches no other job: the real job runner under
the agent unit's capability set, slot users, and outputs packed without following links."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from job_agent.identity import SlotUsers
from job_agent.runner import _owners
from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.drivers.local import session_root
from resource_manager.pool import Pool
from shared.records import JobState
from shared.session import Session
from tests.helpers import requires_tool, wait_until

UNIT = Path(__file__).parents[2] / "job_agent" / "clobi-agent.service"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")

# What the job tries, and what it can see of its own privileges.
PROBE = """\
grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status
head -c 1 /etc/shadow >/dev/null 2>&1 && echo READ_SHADOW
python3 -c 'import os; os.setuid(0)' 2>/dev/null && echo BECAME_ROOT
id -un
"""

RUNNER = """\
import sys
from pathlib import Path
from job_agent.identity import lookup
from job_agent.runner import JobProcess
from shared.records import JobTask
work = Path(sys.argv[1])
task = JobTask(id="c0ffee00.0", name="probe", script="probe.sh", sandbox_key="k",
               attempt=1, max_attempts=1)
user = lookup(sys.argv[2]) if sys.argv[2] else None
JobProcess(task, work, {"PATH": "/usr/bin:/bin"}, work.parent / "out", work.parent / "err",
           user).wait()
"""


def _unit_capabilities() -> str:
    line = next(x for x in UNIT.read_text().splitlines() if x.startswith("AmbientCapabilities="))
    return ",".join(c.lower() for c in line.split("=", 1)[1].split())


@root_only
@requires_tool("capsh")
@pytest.mark.parametrize("slot_user", [True, False], ids=["slot-user", "agent-user"])
def test_a_job_gets_none_of_the_agent_units_capabilities(tmp_path: Path, slot_user: bool) -> None:
    user = ""
    if slot_user:
        users = SlotUsers("clobi-captest", 1)
        identity = users.acquire()  # made as root would make it
        assert identity is not None
        user = identity.name
    work = tmp_path / "work"
    work.mkdir()
    (work / "probe.sh").write_text(PROBE)
    tmp_path.chmod(0o755)
    caps = _unit_capabilities()
    # The agent as the unit runs it: an unprivileged user holding the unit's ambient set.
    agent = [
        "capsh",
        f"--caps={caps}+eip cap_setpcap+eip",
        "--keep=1",
        "--user=daemon",
        f"--caps={caps}+eip",
        f"--inh={caps}",
        f"--addamb={caps}",
        "--",
        "-c",
        'exec "$0" "$@"',
        sys.executable,
        "-c",
        RUNNER,
        str(work),
        user,
    ]
    env = dict(os.environ, PYTHONPATH=str(UNIT.parents[1]))
    done = subprocess.run(agent, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    out = (tmp_path / "out").read_text()
    capabilities = dict(re.findall(r"^(\w+):\s+(\S+)$", out, re.M))
    assert capabilities == {
        "CapInh": "0000000000000000",
        "CapPrm": "0000000000000000",
        "CapEff": "0000000000000000",
        "CapBnd": "0000000000000000",
        "CapAmb": "0000000000000000",
        "NoNewPrivs": "1",
    }, out
    assert "READ_SHADOW" not in out and "BECAME_ROOT" not in out
    assert out.strip().endswith(user or "daemon")


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


@root_only
def test_slots_run_as_distinct_users_that_cannot_reach_each_others_files(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session(job_user="clobi-iso")
    (vm,) = Pool(session).start("local", 1)  # 2 cores: both jobs at once
    client = JobClient(session)
    (victim,) = client.submit(
        JobSpec(
            script=_script(
                tmp_path, "victim.sh", "id -un\necho secret > secret.txt\nsleep 4\ncat secret.txt\n"
            ),
            outputs=("secret.txt",),
        )
    )
    wait_until(
        lambda: client.status([victim])[0].state is JobState.RUNNING, 30, what="the victim to run"
    )
    jobs = session_root(session.id) / vm / "work" / "jobs"
    attack = (
        "id -un\n"
        f"cat {jobs}/{victim}.1/secret.txt && echo READ_SECRET\n"
        f"echo evil > {jobs}/{victim}.1/secret.txt && echo WROTE_SECRET\n"
        f"echo evil >> {jobs}/{victim}.1.logs/stdout && echo WROTE_LOG\n"
        f"ls {jobs} && echo LISTED\n"
        "true\n"
    )
    (attacker,) = client.submit(JobSpec(script=_script(tmp_path, "attacker.sh", attack)))
    rows = client.wait([victim, attacker], timeout=60)
    assert all(r.state is JobState.SUCCEEDED for r in rows), rows
    victim_out, attacker_out = client.logs(victim)["stdout"], client.logs(attacker)["stdout"]
    assert victim_out == "clobi-iso-1\nsecret\n", victim_out
    assert attacker_out.splitlines()[0] == "clobi-iso-2", attacker_out
    for leak in ("READ_SECRET", "WROTE_SECRET", "WROTE_LOG", "LISTED"):
        assert leak not in attacker_out, attacker_out


@root_only
def test_outputs_are_packed_beneath_the_work_folder_whatever_a_leftover_process_swaps(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session(job_user="clobi-swap", max_attempts=1)
    Pool(session).start("local", 1)
    client = JobClient(session)
    # A process that sheds the job's group, session and environment, then keeps swapping
    # sub/ for a link to /etc while the agent packs the outputs.
    swapper = (
        "mkdir sub && echo mine > sub/out.txt\n"
        "setsid env -i /bin/bash -c 'for i in $(seq 20000); do "
        "mv sub real 2>/dev/null; ln -sfn /etc sub; rm -f sub; mv real sub 2>/dev/null; "
        "done' </dev/null >/dev/null 2>&1 &\n"
        "sleep 0.2\n"
    )
    (job,) = client.submit(
        JobSpec(script=_script(tmp_path, "swap.sh", swapper), outputs=("sub/*", "real/*"))
    )
    (row,) = client.wait([job], timeout=60)
    assert row.state is JobState.SUCCEEDED, client.logs(job)
    uid = int(subprocess.run(["id", "-u", "clobi-swap-1"], capture_output=True).stdout)
    wait_until(lambda: not [p for p, owner in _owners() if owner == uid], 10, what="no leftover")
    (result,) = client.fetch([job], tmp_path / "results")
    fetched = {p.relative_to(result).as_posix() for p in result.rglob("*") if p.is_file()}
    assert fetched - {".clobi-fetched"} <= {"stdout", "stderr", "sub/out.txt", "real/out.txt"}
