"""A session's SQS queues, the one place clobi talks to SQS: one queue per priority (`p1` the
lowest) and a dead-letter queue. Created with their redrive policy and visibility timeout;
dispatchers send job messages in batches and ring the doorbell; agents receive, acknowledge
(deleted in batches, a little later), hand back and dead-letter; the Resource Manager reads
depths. A message is only a hint (docs/design.md): a failure here costs a delay, never a job,
so acknowledging, handing back and ringing log and go on."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from typing import Any

from shared import naming
from shared.aws import Aws, translated
from shared.errors import AwsError
from shared.message import wake
from shared.timings import ACK_AFTER_S, MAX_RECEIVES_BEFORE_DLQ, VISIBILITY_TIMEOUT_S

log = logging.getLogger(__name__)
SQS_BATCH = 10  # entries in one SQS batch request
Received = tuple[str, dict[str, Any]]  # (queue URL, the message as SQS gave it)
DEPTHS = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
NOT_YET = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")


def create(aws: Aws, session_id: str, priorities: int, made: list[str]) -> dict[str, str]:
    """A session's queues, by name (`p1`..`pN`, `dlq`); each URL goes into `made` as soon
    as it exists, so a caller can remove a half-made set. Raises AwsError."""
    tags = {naming.TAG_SESSION: session_id}
    with translated("create dead-letter queue"):
        dlq = aws.sqs.create_queue(QueueName=naming.dlq_name(session_id), tags=tags)["QueueUrl"]
    made.append(dlq)
    # A backstop: messages that keep coming back without being claimed end up in the DLQ.
    redrive = json.dumps(
        {"deadLetterTargetArn": _arn(aws, dlq), "maxReceiveCount": MAX_RECEIVES_BEFORE_DLQ}
    )
    urls = {"dlq": dlq}
    for priority in range(1, priorities + 1):
        with translated(f"create queue p{priority}"):
            url = aws.sqs.create_queue(
                QueueName=naming.queue_name(session_id, priority),
                tags=tags,
                Attributes={
                    "RedrivePolicy": redrive,
                    "VisibilityTimeout": str(VISIBILITY_TIMEOUT_S),
                },
            )["QueueUrl"]
        made.append(url)
        urls[f"p{priority}"] = url
    return urls


def _arn(aws: Aws, url: str, tries: int = 6) -> str:
    """A new queue's ARN. SQS may not know a queue for about a second after creating it
    (AWS asks callers to wait), so "no such queue" is asked again, with backoff."""
    for attempt in range(tries):
        try:
            with translated("read dead-letter queue"):
                attrs = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            return str(attrs["Attributes"]["QueueArn"])
        except AwsError as err:
            if err.code not in NOT_YET or attempt == tries - 1:
                raise
            time.sleep(0.25 * 2**attempt)
    raise AssertionError("unreachable")


def delete(aws: Aws, url: str) -> None:
    """Delete one queue. Raises AwsError (a missing queue's code is in NOT_YET)."""
    with translated("delete queue"):
        aws.sqs.delete_queue(QueueUrl=url)


class JobQueues:
    def __init__(self, aws: Aws, session_id: str, urls: dict[str, str]) -> None:
        self._aws = aws
        self._session_id = session_id
        self._urls = urls
        self._dlq = urls["dlq"]
        self._lock = threading.Lock()
        self._to_ack: list[Received] = []
        self._to_ack_since = 0.0

    def receive(self, queue: str, count: int, wait_s: int) -> list[Received]:
        """Up to `count` (at most 10) messages of one queue, long-polling `wait_s`. Raises
        AwsError."""
        with translated("receive job messages"):
            out = self._aws.sqs.receive_message(
                QueueUrl=queue, MaxNumberOfMessages=max(1, min(10, count)), WaitTimeSeconds=wait_s
            )
        messages = out.get("Messages", [])
        log.debug("received %d messages from %s", len(messages), queue.rsplit("/", 1)[-1])
        return [(queue, message) for message in messages]

    def acknowledge(self, messages: list[Received]) -> None:
        """Handled messages, deleted in batches at most ACK_AFTER_S later (one request for
        several jobs). One not deleted yet comes back after the visibility timeout, as after
        any failed delete, and is dropped by whoever receives it: its claim fails."""
        with self._lock:
            if messages and not self._to_ack:
                self._to_ack_since = time.monotonic()
            self._to_ack.extend(messages)
        self.flush()

    def flush(self, now: bool = False) -> None:
        """Delete what is due (everything, with `now`: before a long poll, at stop)."""
        with self._lock:
            if not self._to_ack:
                return
            due = time.monotonic() - self._to_ack_since >= ACK_AFTER_S
            if not (now or due or len(self._to_ack) >= SQS_BATCH):
                return
            messages, self._to_ack = self._to_ack, []
        by_queue: dict[str, list[dict[str, Any]]] = {}
        for queue, message in messages:
            by_queue.setdefault(queue, []).append(message)
        for queue, handled in by_queue.items():
            for first in range(0, len(handled), SQS_BATCH):
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(handled[first : first + SQS_BATCH])
                ]
                try:
                    with translated("delete job messages"):
                        self._aws.sqs.delete_message_batch(QueueUrl=queue, Entries=entries)
                except AwsError as err:
                    log.warning("%s", err)

    def hand_back(self, messages: list[Received], delay_s: int = 0) -> None:
        """Received messages back to their queue, visible again after `delay_s`."""
        for queue, message in messages:
            try:
                with translated("release job message"):
                    self._aws.sqs.change_message_visibility(
                        QueueUrl=queue,
                        ReceiptHandle=message["ReceiptHandle"],
                        VisibilityTimeout=delay_s,
                    )
            except AwsError as err:  # it comes back after the visibility timeout anyway
                log.warning("%s", err)

    def dead_letter(self, message: dict[str, Any], why: str) -> None:
        """A message that is not a job of this session: kept, with why, out of every queue.
        Raises AwsError."""
        log.warning("poison message to the dead-letter queue: %s", why)
        with translated("dead-letter a message"):
            self._aws.sqs.send_message(
                QueueUrl=self._dlq,
                MessageBody=message["Body"][:200_000],
                MessageAttributes={"reason": {"DataType": "String", "StringValue": why[:256]}},
            )

    def url(self, priority: int) -> str:
        return self._urls[f"p{priority}"]

    def send(self, priority: int, bodies: list[str]) -> list[bool]:
        """Send messages to a priority's queue, in batches; whether each one was sent (one
        not sent is the caller's to undo). Entries SQS refused for its own reasons (throttled,
        a server error) are sent again after a pause. Never raises: a failed batch is all
        False."""
        sent: list[bool] = []
        for first in range(0, len(bodies), SQS_BATCH):
            sent += self._send_batch(self.url(priority), bodies[first : first + SQS_BATCH])
        return sent

    def _send_batch(self, url: str, bodies: list[str], tries: int = 3) -> list[bool]:
        left = {str(i): body for i, body in enumerate(bodies)}  # not sent (yet)
        for attempt in range(tries):
            entries = [{"Id": i, "MessageBody": body} for i, body in left.items()]
            try:
                with translated("send job messages"):
                    out = self._aws.sqs.send_message_batch(QueueUrl=url, Entries=entries)
            except AwsError as err:
                log.warning("sending %d job messages failed: %s", len(entries), err)
                break
            failed = out.get("Failed", [])
            left = {f["Id"]: left[f["Id"]] for f in failed}
            if not failed or any(f.get("SenderFault") for f in failed):
                break
            time.sleep(0.2 * 2**attempt * random.uniform(0.5, 1.5))
        return [str(i) not in left for i in range(len(bodies))]

    def ring(self) -> None:
        """The doorbell: a wake message in the lowest queue, the only one idle agents
        long-poll, on which they receive from every queue."""
        try:
            with translated("wake idle agents"):
                self._aws.sqs.send_message(QueueUrl=self.url(1), MessageBody=wake(self._session_id))
        except AwsError as err:  # idle agents look at every queue within a minute anyway
            log.warning("%s", err)

    def depths(self) -> tuple[dict[str, int], dict[str, int]]:
        """Messages waiting and in flight per queue name, -1 where unknown (for display)."""
        waiting, in_flight = {}, {}
        for name, url in self._urls.items():
            try:
                with translated(f"read the depth of queue {name}"):
                    attrs = self._aws.sqs.get_queue_attributes(
                        QueueUrl=url, AttributeNames=list(DEPTHS)
                    )["Attributes"]
                waiting[name], in_flight[name] = (int(attrs[key]) for key in DEPTHS)
            except AwsError:
                waiting[name] = in_flight[name] = -1
        return waiting, in_flight
