"""Idle agents long-poll the lowest queue only; work sent to a higher queue rings a doorbell
there, so an idle agent takes it at once, even while other jobs' messages are out (a window
that is not empty), instead of at its next look at every queue a minute later."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.pool import Pool
from shared.models import LocalCloud
from shared.records import JobState
from shared.session import Session
from shared.timings import IDLE_ROUND_S
from shared.transitions import SENT
from tests.faults.proxy import FaultProxy, operation
from tests.helpers import wait_until


def test_an_idle_agent_takes_high_priority_work_at_once_while_the_window_is_not_empty(
    tmp_path: Path, aws_endpoint: str, make_session: Callable[..., Session]
) -> None:
    with FaultProxy(aws_endpoint) as proxy:
        session = make_session(
            endpoint_url=proxy.url,
            priorities=3,
            clouds=(LocalCloud(name="local", driver="local", cores_per_vm=1, max_vms=1),),
        )
        client = JobClient(session)
        script = tmp_path / "job.sh"
        script.write_text("true\n")
        # A job whose message is out but lost: it holds a place in the window.
        (lost,) = client.submit(JobSpec(script=str(script), priority=1))
        message = session.aws.sqs.receive_message(QueueUrl=session.info.queue_url(1))
        for m in message.get("Messages", []):
            session.aws.sqs.delete_message(
                QueueUrl=session.info.queue_url(1), ReceiptHandle=m["ReceiptHandle"]
            )
        assert [i["id"] for i in session.jobs.by_dispatch(SENT)] == [lost]

        idle = threading.Event()
        proxy.add(
            "pass",
            operation("sqs.ReceiveMessage", body=b'"WaitTimeSeconds": 20', component="agent"),
            on_match=lambda _: idle.set(),
        )
        Pool(session).start("local", 1)
        assert idle.wait(60), "the agent went idle: a long poll of the lowest queue"

        began = time.monotonic()
        (urgent,) = client.submit(JobSpec(script=str(script), priority=3))
        wait_until(
            lambda: client.status([urgent])[0].state is JobState.SUCCEEDED,
            timeout=IDLE_ROUND_S / 3,
            what="the priority-3 job, rung in",
        )
        print(f"started and done in {time.monotonic() - began:.1f} s")
