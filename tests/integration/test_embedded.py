"""The embedded endpoint keeps the promises the protocol relies on."""

from __future__ import annotations

import multiprocessing
import threading
import time

import boto3
from botocore.exceptions import ClientError

from shared.aws import Aws

ITEMS = 100
RACERS = 4


def _client(endpoint: str, service: str):  # type: ignore[no-untyped-def]
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _race(endpoint: str, racer: int, start: float, winners: multiprocessing.Queue[tuple]) -> None:
    ddb = _client(endpoint, "dynamodb")
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
    ddb = _client(aws_endpoint, "dynamodb")
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


def test_a_failed_transaction_leaves_every_item_as_it_was(aws_endpoint: str) -> None:
    """The embedded endpoint backs up only the touched items for rollback (a pinned moto
    adjustment); a cancelled transaction must still change nothing."""
    ddb = _client(aws_endpoint, "dynamodb")
    ddb.create_table(
        TableName="tx",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    )
    ddb.put_item(TableName="tx", Item={"id": {"S": "a"}, "n": {"N": "1"}})
    ddb.put_item(TableName="tx", Item={"id": {"S": "b"}, "n": {"N": "1"}})
    try:
        ddb.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": "tx",
                        "Key": {"id": {"S": "a"}},
                        "UpdateExpression": "SET n = :two",
                        "ExpressionAttributeValues": {":two": {"N": "2"}},
                    }
                },
                {"Put": {"TableName": "tx", "Item": {"id": {"S": "new"}}}},
                {
                    "Update": {
                        "TableName": "tx",
                        "Key": {"id": {"S": "b"}},
                        "UpdateExpression": "SET n = :two",
                        "ConditionExpression": "n = :nine",
                        "ExpressionAttributeValues": {":two": {"N": "2"}, ":nine": {"N": "9"}},
                    }
                },
            ]
        )
    except ClientError as err:
        assert err.response["Error"]["Code"] == "TransactionCanceledException"
    else:
        raise AssertionError("the transaction was meant to fail")
    items = {i["id"]["S"]: i["n"]["N"] for i in ddb.scan(TableName="tx")["Items"] if "n" in i}
    assert items == {"a": "1", "b": "1"}
    assert "Item" not in ddb.get_item(TableName="tx", Key={"id": {"S": "new"}})
