"""The embedded endpoint serves many clients at once: conditional claims raced from several
processes have one winner each, a long poll blocks no one and takes nothing for a client
killed meanwhile, connections are kept alive."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

from botocore.exceptions import ClientError

from embedded.auth import sign
from shared.aws import Aws
from tests.embedded.clients import client, local_keys

ITEMS = 100
RACERS = 4


def _race(endpoint: str, racer: int, start: float, winners: multiprocessing.Queue[tuple]) -> None:
    ddb = client(endpoint, "dynamodb")
    while time.time() < start:
        time.sleep(0.001)
    for item in range(ITEMS):
        try:
            ddb.update_item(
                TableName="race",
                Key={"id": {"S": str(item)}},
                UpdateExpression="SET #s = :running, claimer = :me",
                ConditionExpression="#s = :queued",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={
                    ":running": {"S": "running"},
                    ":queued": {"S": "queued"},
                    ":me": {"N": str(racer)},
                },
            )
            winners.put((item, racer))
        except ClientError as err:
            code = err.response["Error"]["Code"]
            assert code == "ConditionalCheckFailedException", err.response["Error"]


def test_concurrent_conditional_claims_from_several_processes_have_one_winner_each(
    aws_endpoint: str,
) -> None:
    ddb = client(aws_endpoint, "dynamodb")
    ddb.create_table(
        TableName="race",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    )
    for item in range(ITEMS):
        ddb.put_item(TableName="race", Item={"id": {"S": str(item)}, "state": {"S": "queued"}})
    context = multiprocessing.get_context("spawn")
    winners: multiprocessing.Queue[tuple[int, int]] = context.Queue()
    start = time.time() + 2.0
    racers = [
        context.Process(target=_race, args=(aws_endpoint, r, start, winners)) for r in range(RACERS)
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(60)
        assert racer.exitcode == 0
    won: dict[int, list[int]] = {}
    while not winners.empty():
        item, racer_id = winners.get()
        won.setdefault(item, []).append(racer_id)
    assert sorted(won) == list(range(ITEMS)), "every item is claimed"
    assert all(len(w) == 1 for w in won.values()), {i: w for i, w in won.items() if len(w) > 1}
    for item, (racer_id,) in won.items():
        stored = ddb.get_item(TableName="race", Key={"id": {"S": str(item)}})["Item"]
        assert stored["claimer"]["N"] == str(racer_id)


def test_a_long_poll_does_not_block_other_requests(aws_endpoint: str) -> None:
    aws = Aws("us-east-1", aws_endpoint)
    url = aws.sqs.create_queue(QueueName="lp")["QueueUrl"]
    waited: list[float] = []

    def long_poll() -> None:
        began = time.monotonic()
        aws.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=3)
        waited.append(time.monotonic() - began)

    poller = threading.Thread(target=long_poll)
    poller.start()
    time.sleep(0.2)
    began = time.monotonic()
    for _ in range(10):
        aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    others_s = time.monotonic() - began
    poller.join()
    assert waited and waited[0] >= 2.5, "the long poll waited its time"
    assert others_s < 2.0, "other requests were served while it waited"


def test_a_long_poll_returns_as_soon_as_a_message_arrives(aws_endpoint: str) -> None:
    aws = Aws("us-east-1", aws_endpoint)
    url = aws.sqs.create_queue(QueueName="lp2")["QueueUrl"]
    got: list[tuple[float, int]] = []

    def long_poll() -> None:
        began = time.monotonic()
        out = aws.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10)
        got.append((time.monotonic() - began, len(out.get("Messages", []))))

    poller = threading.Thread(target=long_poll)
    poller.start()
    time.sleep(0.3)
    aws.sqs.send_message(QueueUrl=url, MessageBody="hi")
    poller.join()
    assert got[0][1] == 1
    assert got[0][0] < 5


def _long_poll_forever(endpoint: str, url: str, polling: Any) -> None:
    sqs = client(endpoint, "sqs")
    polling.set()
    sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20)


def test_a_long_poll_of_a_client_killed_meanwhile_takes_no_message(aws_endpoint: str) -> None:
    aws = Aws("us-east-1", aws_endpoint)
    url = aws.sqs.create_queue(QueueName="lp3")["QueueUrl"]
    context = multiprocessing.get_context("spawn")
    polling = context.Event()
    doomed = context.Process(target=_long_poll_forever, args=(aws_endpoint, url, polling))
    doomed.start()
    assert polling.wait(30)
    time.sleep(1.0)  # it is waiting in its long poll
    doomed.kill()
    doomed.join()
    aws.sqs.send_message(QueueUrl=url, MessageBody="for the living")
    time.sleep(0.5)  # the dead client's long poll, were it still polling, would take it
    out = aws.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2)
    assert [m["Body"] for m in out.get("Messages", [])] == ["for the living"]


def test_connections_are_kept_alive_and_head_says_the_length(aws_endpoint: str) -> None:
    import http.client
    from urllib.parse import urlparse

    aws = Aws("us-east-1", aws_endpoint)
    aws.s3.create_bucket(Bucket="keep-alive")
    aws.s3.put_object(Bucket="keep-alive", Key="k", Body=b"x" * 1234)
    where = urlparse(aws_endpoint)
    conn = http.client.HTTPConnection(where.hostname or "", where.port)
    url = f"{aws_endpoint}/keep-alive/k"

    def signed(method: str) -> dict[str, str]:
        return sign(method, url, *local_keys(), service="s3")

    answers = []
    for method in ("GET", "HEAD", "GET"):
        conn.request(method, "/keep-alive/k", headers=signed(method))
        response = conn.getresponse()
        answers.append((response.status, response.getheader("Content-Length"), response.read()))
        assert not response.will_close, "the connection serves the next request"
    sock = conn.sock
    conn.request("GET", "/keep-alive/k", headers=signed("GET"))
    conn.getresponse().read()
    assert conn.sock is sock, "no new connection was opened"
    assert answers == [(200, "1234", b"x" * 1234), (200, "1234", b""), (200, "1234", b"x" * 1234)]
