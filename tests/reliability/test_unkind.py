"""The jobs flow behind an endpoint as unkind as AWS (tests/faults/unkind.py), and the
defects it found, each ending with the invariants: nothing lost, run twice or stuck.

The session's components (agents, `clobi rm --headless`, the client) talk to moto through
the unkind proxy; the checks talk to moto directly.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.pool import Pool
from shared.errors import AwsError
from shared.records import JobState
from shared.session import Session
from tests.faults.invariants import assert_invariants
from tests.faults.proxy import FaultProxy, operation
from tests.faults.unkind import Burst, Unkind, UnkindEndpoint, unkind
from tests.helpers import wait_until

LEASE = {"lease_s": 4, "heartbeat_s": 0.5}
# A lease period that a client with sane pacing can hold through 70% of its calls throttled
# for good (a 4 s lease leaves about 2 s to land one renewal in: a coin flip or two).
THROTTLED_LEASE = {"lease_s": 12, "heartbeat_s": 0.5}


def be_unkind(proxy: FaultProxy, config: Unkind) -> UnkindEndpoint:
    """From now on (the session was created kindly)."""
    proxy.unkind.become(config)
    return proxy.unkind


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "job.sh"
    path.write_text("#!/bin/bash\n" + body)
    return str(path)


def submitted_events(direct: Session, ids: list[str]) -> Counter[str]:
    return Counter(job for job in ids for e in direct.events.for_job(job) if e.kind == "submitted")


def test_jobs_flow_under_an_unkind_endpoint(
    tmp_path: Path,
    proxy: FaultProxy,
    faulty: Callable[..., tuple[Session, Session]],
    resource_manager: Callable[[Session], Any],
) -> None:
    session, direct = faulty(max_attempts=4, **LEASE)
    endpoint = be_unkind(proxy, unkind(seed=23))
    resource_manager(session)
    Pool(session).start("local", 2)
    body = 'sleep "0.$((RANDOM % 5))"\necho "$CLOBI_JOB_ID" > out.txt\n'
    spec = JobSpec(script=script(tmp_path, body), count=60, outputs=("out.txt",))
    ids = JobClient(session).submit(spec, token="flow")
    rows = JobClient(session).wait(ids, timeout=150)  # through the unkind endpoint too
    print(f"unkind: {dict(endpoint.injected)}")
    assert {r.state for r in rows} == {JobState.SUCCEEDED}
    assert sum(endpoint.injected.values()) > 0
    assert_invariants(direct)


@pytest.mark.slow
def test_soak_under_an_unkind_endpoint(
    tmp_path: Path,
    proxy: FaultProxy,
    faulty: Callable[..., tuple[Session, Session]],
    resource_manager: Callable[[Session], Any],
) -> None:
    """The soak's size and seed from CLOBI_SOAK_JOBS (1000), CLOBI_SOAK_VMS (4) and
    CLOBI_SOAK_SEED (a random one, printed, to replay a run)."""
    jobs_n = int(os.environ.get("CLOBI_SOAK_JOBS", "1000"))
    vms_n = int(os.environ.get("CLOBI_SOAK_VMS", "4"))
    seed = int(os.environ.get("CLOBI_SOAK_SEED", str(random.randrange(1 << 30))))
    print(f"unkind soak: {jobs_n} jobs on {vms_n} VMs, seed {seed}")
    session, direct = faulty(max_attempts=6, **LEASE)
    endpoint = be_unkind(proxy, unkind(seed=seed))
    resource_manager(session)
    Pool(session).start("local", vms_n)
    body = 'sleep "0.$((RANDOM % 5))"\necho "$CLOBI_JOB_ID $CLOBI_ATTEMPT" > out.txt\n'
    spec = JobSpec(script=script(tmp_path, body), count=jobs_n, outputs=("out.txt",))
    began = time.monotonic()
    ids = JobClient(session).submit(spec, token="soak")
    rows = JobClient(session).wait(ids, timeout=max(600, jobs_n * 0.6))
    elapsed = time.monotonic() - began
    figures = {
        "seed": seed,
        "states": dict(Counter(str(r.state) for r in rows)),
        "attempts": dict(Counter(str(r.attempt) for r in rows)),
        "injected": dict(endpoint.injected),
        "seconds": round(elapsed, 1),
    }
    print("unkind soak figures: " + json.dumps(figures))
    assert {r.state for r in rows} == {JobState.SUCCEEDED}
    assert_invariants(direct)


@pytest.mark.parametrize("reason", ["TransactionConflict", "ThrottlingError"])
def test_a_completion_that_meets_a_cancelled_transaction_lands_without_a_rerun(
    tmp_path: Path,
    proxy: FaultProxy,
    faulty: Callable[..., tuple[Session, Session]],
    resource_manager: Callable[[Session], Any],
    reason: str,
) -> None:
    session, direct = faulty(**LEASE)
    resource_manager(session)  # its reaper would re-run a job whose result never landed
    rate = "txn_conflict_rate" if reason == "TransactionConflict" else "txn_throttle_rate"
    completion = operation("dynamodb.TransactWriteItems", body=b'"succeeded"', component="agent")
    endpoint = be_unkind(proxy, Unkind(seed=1, only=completion, **{rate: 0.7}))
    Pool(session).start("local", 1)
    job = JobClient(session).submit(JobSpec(script=script(tmp_path, "echo once >> out\n")))[0]
    row = JobClient(direct).wait([job], timeout=60)[0]
    assert sum(endpoint.injected.values()) >= 1
    assert (row.state, row.attempt) == (JobState.SUCCEEDED, 1)  # not re-run
    assert_invariants(direct)


def test_a_submit_under_conflicts_creates_every_job_once(
    tmp_path: Path, proxy: FaultProxy, faulty: Callable[..., tuple[Session, Session]]
) -> None:
    session, direct = faulty()
    creates = operation("dynamodb.TransactWriteItems", body=b'"submitted"')
    endpoint = be_unkind(proxy, Unkind(seed=2, only=creates, txn_conflict_rate=0.5))
    ids = JobClient(session).submit(JobSpec(script=script(tmp_path, "true\n"), count=200))
    assert endpoint.injected["transaction conflict"] >= 1
    assert len(direct.jobs.get_many(ids)) == 200
    assert set(submitted_events(direct, ids).values()) == {1}


def test_a_submit_that_failed_half_way_resumes_without_duplicates(
    tmp_path: Path, proxy: FaultProxy, faulty: Callable[..., tuple[Session, Session]]
) -> None:
    session, direct = faulty()
    spec = JobSpec(script=script(tmp_path, "true\n"), count=200)
    creates = operation("dynamodb.TransactWriteItems", body=b'"submitted"')
    proxy.add("pass", creates, times=2)
    proxy.add("reset", creates)  # the third transaction of 50 never gets through
    with pytest.raises(AwsError):
        JobClient(session).submit(spec, token="half")
    proxy.clear()
    writes = operation("dynamodb.")
    be_unkind(proxy, Unkind(seed=3, only=writes, txn_conflict_rate=0.3, write_conflict_rate=0.3))
    ids = JobClient(session).submit(spec, token="half")
    assert len(direct.jobs.get_many(ids)) == 200
    assert set(submitted_events(direct, ids).values()) == {1}


def test_leases_hold_under_sustained_throttling(
    tmp_path: Path,
    proxy: FaultProxy,
    faulty: Callable[..., tuple[Session, Session]],
    resource_manager: Callable[[Session], Any],
) -> None:
    session, direct = faulty(**THROTTLED_LEASE)
    resource_manager(session)  # its reaper would take a job whose lease was not renewed
    Pool(session).start("local", 1)
    job = JobClient(session).submit(JobSpec(script=script(tmp_path, "sleep 12\n")))[0]
    wait_until(lambda: direct.jobs.get(job)["state"] == "running", timeout=30, what="a start")
    agent = operation("dynamodb.", component="agent")
    endpoint = be_unkind(proxy, Unkind(seed=4, only=agent, bursts=(Burst("dynamodb", rate=0.7),)))
    row = JobClient(direct).wait([job], timeout=60)[0]
    assert endpoint.injected["throttle dynamodb"] > 20
    assert (row.state, row.attempt) == (JobState.SUCCEEDED, 1)  # its lease held throughout
    assert "lost" not in {e.kind for e in direct.events.for_job(job)}
    assert_invariants(direct)
