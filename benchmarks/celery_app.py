"""The Celery app of the throughput peer: SQS broker and DynamoDB results on clobi's endpoint.

Imported by `celery worker -A benchmarks.celery_app` (the endpoint comes from the environment)
and by the benchmark, which submits. Needs the `bench` extra; nothing of clobi imports it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from celery import Celery
from celery.signals import worker_process_init, worker_ready

from shared import localkeys

ENDPOINT_ENV = "CLOBI_PEER_ENDPOINT"  # the embedded endpoint's URL, for the workers
READY_ENV = "CLOBI_PEER_READY_DIR"  # each worker touches a file named by its pid here when ready
TASK = "clobi_peer.run_job"
QUEUE = "clobi-peer"
TABLE = "clobi-peer-results"
RESULT = "0" * 1024  # every job prints 1 KiB (`printf %01024d 0`), returned as its result
POLLING_INTERVAL_S = 0.05
# Celery's default, 8 messages a worker. For short tasks its docs suggest raising it; on this
# endpoint 1, 2, 5 and 10 measured no better (50-63 tasks/s at 500 tasks, within the noise).
PREFETCH_MULTIPLIER = 4

app = Celery("clobi_peer")


def keys() -> tuple[str, str]:
    """The embedded endpoint's key pair (of the benchmark's CLOBI_HOME): it signs every
    request, Celery's too."""
    found = localkeys.read(localkeys.default_path())
    if found is None:
        raise RuntimeError(f"no key pair at {localkeys.default_path()}")
    return found


def settings(endpoint_url: str) -> dict[str, Any]:
    """The configuration, as Celery's maintainers advise for short tasks on SQS."""
    host = urlsplit(endpoint_url).netloc  # 127.0.0.1:PORT
    key, secret = keys()
    return {
        "broker_url": f"sqs://{key}:{secret}@{host}",
        "broker_transport_options": {
            "region": "us-east-1",
            "is_secure": False,  # the endpoint speaks plain HTTP
            # After a poll that brings nothing new (also when its prefetch is full), a worker
            # sleeps this long: the default 1 s caps a worker near 8 tasks/s.
            "polling_interval": POLLING_INTERVAL_S,
            "wait_time_seconds": 10,  # the default long poll
            "visibility_timeout": 1800,
        },
        "broker_connection_retry_on_startup": True,
        "result_backend": f"dynamodb://{key}:{secret}@{host}/{TABLE}",
        "task_default_queue": QUEUE,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # Parity of safety with clobi, whose job survives the death of its VM: acknowledge
        # (delete from SQS) only after the result is stored, and redeliver if the process dies.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": PREFETCH_MULTIPLIER,
        # SQS has no broadcast: remote control and events would only add queues to poll.
        "worker_enable_remote_control": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
    }


if ENDPOINT_ENV in os.environ:
    app.conf.update(settings(os.environ[ENDPOINT_ENV]))


def client(endpoint_url: str) -> Celery:
    """A fresh app to submit from and read results with (each run has its own endpoint)."""
    submitter = Celery("clobi_peer")
    submitter.conf.update(settings(endpoint_url))
    return submitter


@app.task(name=TASK)
def run_job(script: str) -> str:
    """The same no-op shell job as clobi's, run as clobi runs it; returns its output, 1 KiB."""
    done = subprocess.run(["/bin/bash", script], check=True, capture_output=True, text=True)
    return done.stdout


@worker_process_init.connect
def _own_result_connections(**_: Any) -> None:
    """A pool process makes its own DynamoDB client. The results backend builds one in the
    worker's main process (to check its table) before the pool forks; its kept-alive HTTP
    connection would be shared by every child, their requests interleaved on one socket.
    Celery's advice for anything holding connections: set it up in `worker_process_init`."""
    backend: Any = app.backend
    backend._client = None
    key, secret = keys()
    backend._get_client(access_key_id=key, secret_access_key=secret)


@worker_ready.connect
def _announce_ready(**_: Any) -> None:
    folder = os.environ.get(READY_ENV)
    if folder:
        (Path(folder) / str(os.getpid())).touch()
