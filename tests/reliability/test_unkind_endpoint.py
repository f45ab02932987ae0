"""The unkind endpoint itself (tests/faults/unkind.py): each behaviour AWS documents, seen
through the FaultProxy by a real client, and nothing applied when a request is refused."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from shared.aws import Aws
from shared.errors import JobNotFound
from shared.jobcreate import NewJob
from shared.records import JobState
from shared.session import Session
from tests.faults.proxy import FaultProxy
from tests.faults.unkind import Burst, Unkind
from tests.helpers import wait_until


@pytest.fixture
def unkind_proxy(aws_endpoint: str) -> Iterator[Callable[..., FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make(**config: Any) -> FaultProxy:
        proxy = FaultProxy(aws_endpoint, unkind=Unkind(**config))
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


def sessions(
    proxy: FaultProxy, aws_endpoint: str, make_session: Callable[..., Session]
) -> tuple[Session, Session]:
    session = make_session(endpoint_url=proxy.url)
    return session, Session(session.info, Aws(session.info.region, aws_endpoint))


def new_job(job_id: str) -> NewJob:
    return NewJob(id=job_id, name="j", priority=1, max_attempts=1, task={}, seq=0)


def queued_ids(session: Session) -> set[str]:
    return {item["id"] for item in session.jobs.by_state(JobState.QUEUED)}


def codes(err: ClientError) -> list[str]:
    return [r["Code"] for r in err.response.get("CancellationReasons", [])]


def test_an_index_read_lags_the_table(
    unkind_proxy: Callable[..., FaultProxy],
    aws_endpoint: str,
    make_session: Callable[..., Session],
) -> None:
    proxy = unkind_proxy(gsi_lag_s=2.0)
    session, direct = sessions(proxy, aws_endpoint, make_session)
    session.jobs.create([new_job("b.0")])
    assert queued_ids(session) == set()  # not in the index yet
    assert queued_ids(direct) == {"b.0"}
    assert session.jobs.get("b.0")["state"] == "queued"  # the table itself is consistent
    wait_until(lambda: queued_ids(session) == {"b.0"}, timeout=10, what="the index to catch up")
    session.jobs.cancel("b.0")
    assert queued_ids(session) == {"b.0"}  # still seen where it was
    assert queued_ids(direct) == set()
    wait_until(lambda: not queued_ids(session), timeout=10, what="the index to catch up")
    assert proxy.unkind is not None and proxy.unkind.injected["stale index read"] >= 2


def test_cancelled_transactions_and_conflicting_writes_apply_nothing(
    unkind_proxy: Callable[..., FaultProxy],
    aws_endpoint: str,
    make_session: Callable[..., Session],
) -> None:
    kind = unkind_proxy()
    session, direct = sessions(kind, aws_endpoint, make_session)
    table = session.jobs.table
    item = {"id": {"S": "x.0"}, "state": {"S": "queued"}}
    for config, reason in (
        ({"txn_conflict_rate": 1.0}, "TransactionConflict"),
        (
            {"txn_throttle_rate": 1.0},
            "ThrottlingError",
        ),
    ):
        ddb = Aws("us-east-1", unkind_proxy(**config).url).unretried("dynamodb")
        with pytest.raises(ClientError) as caught:
            ddb.transact_write_items(TransactItems=[{"Put": {"TableName": table, "Item": item}}])
        assert caught.value.response["Error"]["Code"] == "TransactionCanceledException"
        assert codes(caught.value) == [reason]
    ddb = Aws("us-east-1", unkind_proxy(write_conflict_rate=1.0).url).unretried("dynamodb")
    with pytest.raises(ClientError) as caught:
        ddb.put_item(TableName=table, Item=item)
    assert caught.value.response["Error"]["Code"] == "TransactionConflictException"
    with pytest.raises(JobNotFound):
        direct.jobs.get("x.0")


@pytest.mark.parametrize(
    ("service", "code"),
    [
        ("dynamodb", "ProvisionedThroughputExceededException"),
        ("sqs", "ThrottlingException"),
        ("ec2", "RequestLimitExceeded"),
    ],
)
def test_a_throttling_burst_refuses_one_service(
    unkind_proxy: Callable[..., FaultProxy], service: str, code: str
) -> None:
    proxy = unkind_proxy(bursts=(Burst(service, rate=1.0, burst_s=60, period_s=120),))
    aws = Aws("us-east-1", proxy.url)
    calls = {
        "dynamodb": lambda c: c.list_tables(),
        "sqs": lambda c: c.list_queues(),
        "ec2": lambda c: c.describe_regions(),
    }
    with pytest.raises(ClientError) as caught:
        calls[service](aws.unretried(service))
    assert caught.value.response["Error"]["Code"] == code
    other = "sqs" if service != "sqs" else "dynamodb"
    calls[other](aws.unretried(other))  # other services pass


def test_a_new_instance_or_volume_is_missing_from_describe_for_a_while(
    unkind_proxy: Callable[..., FaultProxy],
) -> None:
    ec2 = Aws("us-east-1", unkind_proxy(ec2_lag_s=3.0).url).client("ec2")
    run = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
    instance = run["Instances"][0]["InstanceId"]
    volume = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    with pytest.raises(ClientError, match=r"InvalidInstanceID\.NotFound"):
        ec2.describe_instances(InstanceIds=[instance])
    with pytest.raises(ClientError, match=r"InvalidVolume\.NotFound"):
        ec2.describe_volumes(VolumeIds=[volume])

    def listed() -> set[str]:
        instances = {
            i["InstanceId"]
            for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"]
        }
        return instances | {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}

    assert not {instance, volume} & listed()
    wait_until(lambda: {instance, volume} <= listed(), timeout=15, what="EC2 to catch up")
    assert ec2.describe_instances(InstanceIds=[instance])["Reservations"]


def test_a_short_poll_can_miss_a_message_that_is_there(
    unkind_proxy: Callable[..., FaultProxy], aws_endpoint: str
) -> None:
    sqs = Aws("us-east-1", unkind_proxy(short_poll_miss_rate=1.0).url).client("sqs")
    url = sqs.create_queue(QueueName="unkind")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="here")
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)  # a long poll finds it
    assert [m["Body"] for m in got["Messages"]] == ["here"]


def test_batch_requests_leave_items_unprocessed(
    unkind_proxy: Callable[..., FaultProxy],
    aws_endpoint: str,
    make_session: Callable[..., Session],
) -> None:
    proxy = unkind_proxy(seed=5, unprocessed_rate=1.0)
    session, direct = sessions(proxy, aws_endpoint, make_session)
    ddb = Aws("us-east-1", proxy.url).unretried("dynamodb")
    table = session.events.table
    put = {"PutRequest": {"Item": session.events.item("j.0", "noted")}}
    answer = ddb.batch_write_item(RequestItems={table: [put]})
    assert answer["UnprocessedItems"] == {table: [put]}
    assert direct.events.for_job("j.0") == []  # nothing written
    direct.jobs.create([new_job(f"b.{i}") for i in range(20)])
    keys = [{"id": {"S": f"b.{i}"}} for i in range(20)]
    answer = ddb.batch_get_item(RequestItems={session.jobs.table: {"Keys": keys}})
    read = {i["id"]["S"] for i in answer["Responses"][session.jobs.table]}
    left = {k["id"]["S"] for k in answer["UnprocessedKeys"][session.jobs.table]["Keys"]}
    assert left and read and read | left == {f"b.{i}" for i in range(20)}
    assert len(session.jobs.get_many(f"b.{i}" for i in range(20))) == 20  # asked again


def test_the_same_seed_injects_the_same_faults(
    unkind_proxy: Callable[..., FaultProxy], aws_endpoint: str
) -> None:
    def pattern(seed: int) -> list[bool]:
        burst = (Burst("dynamodb", rate=0.5),)
        ddb = Aws("us-east-1", unkind_proxy(seed=seed, bursts=burst).url).unretried("dynamodb")
        outcomes = []
        for _ in range(20):
            try:
                ddb.list_tables()
                outcomes.append(True)
            except ClientError:
                outcomes.append(False)
        return outcomes

    assert pattern(3) == pattern(3)
    assert pattern(3) != pattern(4)
