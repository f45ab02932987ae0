"""The invariants every fault test ends with, checked over the final DynamoDB and S3 state,
the event log, this machine's processes and every artifact a session leaves.

`check(session)` returns the violations (an empty list is a pass); `assert_invariants` fails
the test with all of them. The session given must talk to the moto server directly, not
through a fault proxy.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from job_agent.runner import job_processes
from shared import naming
from shared.aws import from_item
from shared.events import Event
from shared.records import TERMINAL_STATES, JobState
from shared.session import Session

END_KINDS = {"succeeded", "failed", "cancelled", "retry", "lost"}  # an attempt ends with one
FINAL_KINDS = {"succeeded", "failed", "cancelled"}  # the job ends with one (or a last `lost`)
# The credentials the tests run with, and the canary the secrets test plants.
CANARIES = ("testing-secret-key", "CANARY")


def assert_invariants(session: Session, *, canaries: tuple[str, ...] = (), **kw: Any) -> None:
    violations = check(session, canaries=canaries, **kw)
    assert not violations, "invariants violated:\n" + "\n".join(violations)


def check(
    session: Session,
    *,
    canaries: tuple[str, ...] = (),
    expect_terminal: bool = True,
    home: Path | None = None,
) -> list[str]:
    jobs = _all_jobs(session)
    problems: list[str] = []
    for job in jobs.values():
        problems += _job(session, job, expect_terminal)
    problems += _results(session, jobs)
    problems += _counts(session, jobs)
    problems += _leftover_processes(jobs)
    secrets = tuple(c for c in canaries if c)
    if secrets:
        problems += _no_canary(session, secrets, home)
    return problems


def _counts(session: Session, jobs: dict[str, dict[str, Any]]) -> list[str]:
    """The finished jobs' counts (kept with their transitions) agree with the table: each
    finish counted once, however often its write was tried."""
    actual = Counter(JobState(job["state"]) for job in jobs.values())
    counted = session.vms.finished()
    return [
        f"{state}: {counted[state]} counted, {actual[state]} in the table"
        for state in TERMINAL_STATES
        if counted[state] != actual[state]
    ]


def _all_jobs(session: Session) -> dict[str, dict[str, Any]]:
    items: dict[str, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {"TableName": session.info.tables["jobs"], "ConsistentRead": True}
    while True:
        page = session.aws.ddb.scan(**kwargs)
        for raw in page.get("Items", []):
            item = from_item(raw)
            items[item["id"]] = item
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _job(session: Session, job: dict[str, Any], expect_terminal: bool) -> list[str]:
    jid, state = job["id"], JobState(job["state"])
    attempt, limit = int(job.get("attempt", 0)), int(job["max_attempts"])
    events = session.events.for_job(jid)
    problems = []
    if state.terminal:
        final = [e for e in events if e.kind in FINAL_KINDS]
        if len(final) > 1:
            problems.append(f"{jid}: {len(final)} final events {_kinds(final)}")
        if state is JobState.SUCCEEDED and [e.kind for e in final] != ["succeeded"]:
            problems.append(f"{jid}: succeeded, but its final events are {_kinds(final)}")
        if state is JobState.FAILED and not job.get("reason"):
            problems.append(f"{jid}: failed without a reason")
    elif expect_terminal:
        problems.append(f"{jid}: still {state} at the end")
    elif state in (JobState.RUNNING, JobState.SAVING) and not _lease_is_live(session, job):
        problems.append(f"{jid}: {state} but its lease is not being renewed")
    if attempt > limit:
        problems.append(f"{jid}: attempt {attempt} beyond max_attempts {limit}")
    ends: Counter[int] = Counter(e.attempt for e in events if e.kind in END_KINDS and e.attempt)
    for number, count in ends.items():
        if count > 1:  # a superseded attempt wrote after its end
            kinds = _kinds([e for e in events if e.attempt == number and e.kind in END_KINDS])
            problems.append(f"{jid}: attempt {number} ended {count} times {kinds}")
        if number > limit:
            problems.append(f"{jid}: events of attempt {number} beyond max_attempts {limit}")
    started = {e.attempt for e in events if e.kind == "started"}
    for event in events:
        if event.kind == "succeeded" and event.attempt not in started:
            problems.append(f"{jid}: attempt {event.attempt} succeeded with no started event")
        if event.kind in ("retry", "lost", "failed") and not event.detail:
            problems.append(f"{jid}: {event.kind} event of attempt {event.attempt} has no reason")
    return problems


def _kinds(events: list[Event]) -> str:
    return "[" + ", ".join(f"{e.kind}@{e.attempt}" for e in events) + "]"


def _lease_is_live(session: Session, job: dict[str, Any]) -> bool:
    """Renewed within a lease period (or the job moved on meanwhile)."""
    deadline = time.monotonic() + session.info.config.lease_s
    while time.monotonic() < deadline:
        now = session.jobs.get(job["id"])
        if now["state"] != job["state"] or now.get("lease_seq") != job.get("lease_seq"):
            return True
        time.sleep(0.2)
    return False


def _results(session: Session, jobs: dict[str, dict[str, Any]]) -> list[str]:
    """The user sees only the recorded attempt's output: the result key is that attempt's."""
    problems = []
    bucket, prefix = session.info.bucket, session.info.prefix
    for jid, job in jobs.items():
        key = job.get("result_key")
        if not key:
            continue
        expected = naming.attempt_prefix(prefix, jid, int(job["attempt"]))
        if not key.startswith(expected):
            problems.append(f"{jid}: result {key} is not attempt {job['attempt']}'s")
            continue
        try:
            session.aws.s3.head_object(Bucket=bucket, Key=key)
        except Exception as err:
            problems.append(f"{jid}: result {key} unreadable: {err}")
    return problems


def _leftover_processes(jobs: dict[str, dict[str, Any]]) -> list[str]:
    finished = [jid for jid, job in jobs.items() if JobState(job["state"]).terminal]
    deadline = time.monotonic() + 10  # a killed job's processes may take a moment to go
    while True:
        left = {jid: job_processes(jid) for jid in finished}
        left = {jid: pids for jid, pids in left.items() if pids}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return [f"{jid}: finished, but processes {pids} of it remain" for jid, pids in left.items()]


def _no_canary(session: Session, canaries: tuple[str, ...], home: Path | None) -> list[str]:
    """No canary in any S3 object (archives opened), table item, queue message or local file."""
    found: list[str] = []

    def search(where: str, data: bytes) -> None:
        for canary in canaries:
            if canary.encode() in data:
                found.append(f"canary {canary[:6]}... in {where}")

    aws, info = session.aws, session.info
    for page in aws.s3.get_paginator("list_objects_v2").paginate(
        Bucket=info.bucket, Prefix=info.prefix
    ):
        for obj in page.get("Contents", []):
            data = aws.s3.get_object(Bucket=info.bucket, Key=obj["Key"])["Body"].read()
            for name, content in _unpacked(obj["Key"], data):
                search(f"s3 {name}", content)
    for table in info.tables.values():
        kwargs: dict[str, Any] = {"TableName": table}
        while True:
            page = aws.ddb.scan(**kwargs)
            for item in page.get("Items", []):
                search(f"table {table}", repr(item).encode())
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    for name, url in info.queue_urls.items():
        messages = aws.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0
        ).get("Messages", [])
        for message in messages:
            search(f"queue {name}", repr(message).encode())
    if home is not None:
        for path in home.rglob("*"):
            if path.is_file() and not path.is_symlink():
                search(f"file {path}", path.read_bytes())
    return found


def _unpacked(key: str, data: bytes) -> list[tuple[str, bytes]]:
    """An object's bytes, and the members of a gzip tar archive."""
    out = [(key, data)]
    if key.endswith(".tar.gz"):
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                for member in tar.getmembers():
                    extracted = tar.extractfile(member) if member.isfile() else None
                    if extracted is not None:
                        out.append((f"{key}!{member.name}", extracted.read()))
        except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile):
            pass
    return out


def attempts_by_job(session: Session) -> dict[str, list[int]]:
    """Per job, the attempt numbers its events name (for tests' own assertions)."""
    seen: dict[str, set[int]] = defaultdict(set)
    for jid in _all_jobs(session):
        for event in session.events.for_job(jid):
            if event.attempt:
                seen[jid].add(event.attempt)
    return {jid: sorted(numbers) for jid, numbers in seen.items()}
