"""The soak: thousands of short jobs on several local VMs while agents are killed, frozen past
their lease and stopped at random; at the end, the invariants over everything.

Not in CI (marked slow). Run it with

    python -m pytest -m slow tests/reliability/test_soak.py -s

CLOBI_SOAK_JOBS (default 2000), CLOBI_SOAK_VMS (4) and CLOBI_SOAK_SEED (a random one, printed)
change its size and replay a run. It prints its figures: jobs and their end states, faults
injected by kind, violations found (must be 0), time taken.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.pool import Pool
from shared.errors import ClobiError
from shared.models import LocalCloud
from shared.session import Session
from tests.faults import processes
from tests.faults.invariants import check

pytestmark = pytest.mark.slow


def _agent(session: Session, vm: str) -> bool:
    try:
        os.kill(processes.agent_pid(session, vm), 0)
    except (AssertionError, ProcessLookupError):
        return False
    return True


def test_soak_with_random_agent_faults(
    tmp_path: Path,
    make_session: Callable[..., Session],
    resource_manager: Callable[[Session], Any],
) -> None:
    jobs_n = int(os.environ.get("CLOBI_SOAK_JOBS", "2000"))
    vms_n = int(os.environ.get("CLOBI_SOAK_VMS", "4"))
    seed = int(os.environ.get("CLOBI_SOAK_SEED", str(random.randrange(1 << 30))))
    chance = random.Random(seed)
    print(f"soak: {jobs_n} jobs on {vms_n} VMs, seed {seed}")
    cloud = LocalCloud(name="local", driver="local", cores_per_vm=2, max_vms=vms_n * 20)
    session = make_session(lease_s=4, heartbeat_s=0.5, max_attempts=6, clouds=(cloud,))
    resource_manager(session)
    pool, client = Pool(session), JobClient(session)
    pool.start("local", vms_n)
    script = tmp_path / "job.sh"
    script.write_text(
        '#!/bin/bash\nsleep "0.$((RANDOM % 5))"\necho "$CLOBI_JOB_ID $CLOBI_ATTEMPT" > out.txt\n'
    )
    began = time.monotonic()
    ids = client.submit(JobSpec(script=str(script), count=jobs_n, outputs=("out.txt",)))

    faults: Counter[str] = Counter()
    done = threading.Event()

    def chaos() -> None:
        while not done.wait(chance.uniform(1.0, 4.0)):
            try:
                live = [vm.id for vm in pool.vms() if vm.state in ("starting", "running")]
                alive = [vm for vm in live if _agent(session, vm)]
                if len(alive) < vms_n:  # the pool keeps its size: replacements
                    pool.start("local", vms_n - len(alive))
                if not alive:
                    continue
                vm = chance.choice(alive)
                pid = processes.agent_pid(session, vm)
                kind = chance.choice(["kill", "freeze", "terminate"])
                if kind == "kill":
                    processes.kill(pid)
                    pool.kill([vm])
                elif kind == "freeze":
                    processes.freeze(pid)
                    done.wait(session.info.config.lease_s * 1.5)
                    processes.thaw(pid)
                else:
                    processes.terminate(pid)
                faults[kind] += 1
            except (AssertionError, ProcessLookupError, ClobiError) as err:
                faults[f"skipped: {type(err).__name__}"] += 1

    thread = threading.Thread(target=chaos, daemon=True)
    thread.start()
    try:
        rows = client.wait(ids, timeout=max(600, jobs_n * 0.6))
    finally:
        done.set()
        thread.join(60)
    elapsed = time.monotonic() - began
    pool.terminate_all()
    violations = check(session)
    states = Counter(str(r.state) for r in rows)
    attempts = Counter(r.attempt for r in rows)
    figures = {
        "jobs": jobs_n,
        "vms": vms_n,
        "seed": seed,
        "states": dict(states),
        "attempts": {str(k): v for k, v in sorted(attempts.items())},
        "faults": dict(faults),
        "violations": len(violations),
        "seconds": round(elapsed, 1),
        "jobs_per_s": round(jobs_n / elapsed, 2),
    }
    print("soak figures: " + json.dumps(figures))
    assert not violations, "\n".join(violations[:50])
    assert sum(faults[k] for k in ("kill", "freeze", "terminate")) > 0
