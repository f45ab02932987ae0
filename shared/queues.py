"""A session's job queues as an agent uses them: receive, acknowledge (deleted in batches, a
little later), hand back, dead-letter. A message is only a hint (docs/design.md): a failure
here costs a delay, never a job, so acknowledging and handing back log and go on."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from shared.aws import Aws, translated
from shared.errors import AwsError

log = logging.getLogger(__name__)
ACK_AFTER_S = 0.5  # handled messages are deleted in batches, at most about this much later
SQS_BATCH = 10  # entries in one SQS batch request
Received = tuple[str, dict[str, Any]]  # (queue URL, the message as SQS gave it)


class JobQueues:
    def __init__(self, aws: Aws, dead_letter_url: str) -> None:
        self._aws = aws
        self._dlq = dead_letter_url
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
        """A message that is not a job of this session: kept, with why, out of every lane.
        Raises AwsError."""
        log.warning("poison message to the dead-letter queue: %s", why)
        with translated("dead-letter a message"):
            self._aws.sqs.send_message(
                QueueUrl=self._dlq,
                MessageBody=message["Body"][:200_000],
                MessageAttributes={"reason": {"DataType": "String", "StringValue": why[:256]}},
            )
