"""The Celery peer of the throughput scenario: the same no-op jobs through Celery (SQS broker,
DynamoDB results) on the same endpoint, measured the same way: first submit to last result stored.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

from benchmarks.harness import Bench, peak_rss_mb, wait_for

INSTALL_HINT = "pip install -e '.[bench]'"
ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def available() -> bool:
    return importlib.util.find_spec("celery") is not None


def throughput(
    b: Bench, script: str, jobs: int, workers: int = 2, concurrency: int = 2
) -> dict[str, Any]:
    """Run `jobs` Celery tasks of `script` on `workers` worker processes x `concurrency`:
    seconds from first submit to last result stored, and the endpoint's stats of the run."""
    from benchmarks import celery_app

    app = celery_app.client(b.url)
    sqs, dynamodb = _client(b, "sqs"), _client(b, "dynamodb")
    assert app.backend.client  # creates the result table, which the workers would race for
    try:
        with _workers(b, workers, concurrency) as pids:
            cpu0 = b.stats(reset=True)["cpu_s"]
            began = time.time()
            ids = _submit(app, script, jobs)
            submitted = time.time()
            queue_url = sqs.get_queue_url(QueueName=celery_app.QUEUE)["QueueUrl"]
            stored: dict[str, float] = {}

            def done() -> bool:
                if not _drained(sqs, queue_url):
                    return False
                stored.update(_results(app, dynamodb, [i for i in ids if i not in stored]))
                return len(stored) == jobs

            wait_for(done, timeout_s=max(300.0, jobs), poll_s=1.0)
            stats = b.stats()
            rss = max((_tree_rss_mb(pid) for pid in pids), default=0.0)
    finally:
        app.close()
    return {
        "seconds": max(stored.values()) - began,
        "submit seconds": submitted - began,
        "cpu_s": stats["cpu_s"] - cpu0,
        "requests": stats["requests"],
        "backend_cpu_s": stats["backend_cpu_s"],
        "peak RSS worker MB": rss,
    }


def _submit(app: Any, script: str, jobs: int) -> list[str]:
    """One message a task, as Celery sends them (it has no batch publish), on one connection."""
    from benchmarks.celery_app import TASK

    with app.producer_or_acquire() as producer:
        return [app.send_task(TASK, (script,), producer=producer).id for _ in range(jobs)]


def _client(b: Bench, service: str) -> Any:
    from benchmarks.celery_app import keys

    key, secret = keys()
    return boto3.client(
        service,
        endpoint_url=b.url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


def _drained(sqs: Any, queue_url: str) -> bool:
    """No message waiting or in flight: with late acks, every task's result is stored."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return not any(int(n) for n in attributes.values())


def _results(app: Any, dynamodb: Any, ids: list[str]) -> dict[str, float]:
    """Task id -> when its result was stored, for the tasks that have one; raises if a task
    did not succeed with its 1 KiB."""
    from benchmarks.celery_app import RESULT, TABLE

    keys = {str(app.backend.get_key_for_task(task_id)): task_id for task_id in ids}
    found: dict[str, float] = {}
    pending = [{"id": {"S": key}} for key in keys]
    while pending:
        batch, pending = pending[:100], pending[100:]
        answer = dynamodb.batch_get_item(RequestItems={TABLE: {"Keys": batch}})
        pending += answer.get("UnprocessedKeys", {}).get(TABLE, {}).get("Keys", [])
        for item in answer["Responses"].get(TABLE, []):
            meta = json.loads(item["result"]["B"])
            if meta["status"] != "SUCCESS" or meta["result"] != RESULT:
                raise RuntimeError(f"Celery peer: a task ended {meta['status']}: {meta}")
            found[keys[item["id"]["S"]]] = float(item["timestamp"]["N"])
    return found


@contextmanager
def _workers(b: Bench, count: int, concurrency: int) -> Iterator[list[int]]:
    """`count` real `celery worker` processes; yields their pids once all are ready."""
    from benchmarks.celery_app import ENDPOINT_ENV, READY_ENV

    ready = b.home / "celery-ready"
    ready.mkdir(exist_ok=True)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, **{ENDPOINT_ENV: b.url, READY_ENV: str(ready)})
    log = b.home / "celery-workers.log"
    procs: list[subprocess.Popen[bytes]] = []
    with open(log, "ab") as out:
        try:
            for index in range(count):
                procs.append(_start_worker(index, concurrency, env, out))
            try:
                wait_for(lambda: len(list(ready.iterdir())) >= count, READY_TIMEOUT_S)
            except TimeoutError as err:
                raise RuntimeError(f"Celery workers not ready: {_tail(log)}") from err
            yield [p.pid for p in procs]
        finally:
            for proc in procs:
                _stop(proc)


def _start_worker(
    index: int, concurrency: int, env: dict[str, str], out: Any
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "celery",
        "--app",
        "benchmarks.celery_app",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        str(concurrency),
        "--hostname",
        f"peer{index}@%h",
        "--loglevel",
        "WARNING",
        # gossip, mingle and heartbeats need broadcast, which SQS lacks
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=out,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Warm shutdown (SIGTERM); the worker's whole process group if it lingers."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(STOP_TIMEOUT_S)


def _tree_rss_mb(pid: int) -> float:
    """Peak RSS of a worker and its pool processes, added up."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return sum(peak_rss_mb(p) or 0.0 for p in [pid, *map(int, children)])


def _tail(log: Path, chars: int = 2000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"
