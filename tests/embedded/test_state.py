"""The embedded endpoint keeps its state on disk: every acknowledged change survives a kill -9,
torn journal records are dropped, the journal is compacted into snapshots, SQS messages are
not kept (queues are), and state of another version is refused, untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from embedded import server
from embedded.state import StateRefused
from shared import localkeys
from tests.helpers import wait_until

Launch = Callable[[], tuple[subprocess.Popen[bytes], str]]


@pytest.fixture
def durable(tmp_path: Path, endpoint_keys: Path) -> Iterator[Launch]:
    """Start (and start again) an endpoint keeping its state in tmp_path/state, on one port."""
    procs: list[subprocess.Popen[bytes]] = []
    port = [0]

    def launch() -> tuple[subprocess.Popen[bytes], str]:
        proc, url = server.launch(
            port[0],
            ready_file=tmp_path / "ready.json",
            log_file=tmp_path / "endpoint.log",
            credentials=endpoint_keys,
            detach=False,
            state_dir=tmp_path / "state",
        )
        port[0] = int(url.rsplit(":", 1)[1])
        procs.append(proc)
        return proc, url

    yield launch
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    print((tmp_path / "endpoint.log").read_text()[-3000:])


def client(url: str, service: str, keys: tuple[str, str] | None = None) -> Any:
    key, secret = keys or localkeys.read(localkeys.default_path()) or ("", "")
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


def open_files(pid: int) -> list[str]:
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:  # closed meanwhile
            continue
    return found


def crash(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def make_table(url: str) -> None:
    client(url, "dynamodb").create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def test_every_acknowledged_change_survives_a_kill_9(durable: Launch, tmp_path: Path) -> None:
    proc, url = durable()
    make_table(url)
    ddb, s3, sqs, iam = (client(url, s) for s in ("dynamodb", "s3", "sqs", "iam"))
    for i in range(20):
        ddb.put_item(TableName="t", Item={"id": {"S": str(i)}, "n": {"N": str(i)}})
    ddb.update_item(
        TableName="t",
        Key={"id": {"S": "3"}},
        UpdateExpression="SET n = :n",
        ConditionExpression="n = :three",
        ExpressionAttributeValues={":n": {"N": "33"}, ":three": {"N": "3"}},
    )
    ddb.delete_item(TableName="t", Key={"id": {"S": "4"}})
    s3.create_bucket(Bucket="bucket-1")
    s3.put_object(Bucket="bucket-1", Key="small", Body=b"small")
    big = os.urandom(3 * 1024**2)
    (tmp_path / "big").write_bytes(big * 4)  # 12 MiB: a multipart upload
    s3.upload_file(str(tmp_path / "big"), "bucket-1", "big")
    spooled = tmp_path / "state" / "tmp"  # large bodies live in (unlinked) files there
    assert any(path.startswith(str(spooled)) for path in open_files(proc.pid))
    queue = sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "7"})["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="a hint")
    iam.create_user(UserName="agent")
    made = iam.create_access_key(UserName="agent")["AccessKey"]
    crash(proc)

    proc, url = durable()
    ddb, s3, sqs = (client(url, s) for s in ("dynamodb", "s3", "sqs"))
    items = ddb.scan(TableName="t")["Items"]
    assert sorted(int(item["n"]["N"]) for item in items) == sorted(
        [n for n in range(20) if n not in (3, 4)] + [33]
    )
    assert s3.get_object(Bucket="bucket-1", Key="small")["Body"].read() == b"small"
    assert s3.get_object(Bucket="bucket-1", Key="big")["Body"].read() == big * 4
    assert sqs.get_queue_url(QueueName="q")["QueueUrl"] == queue
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert attributes["VisibilityTimeout"] == "7"
    assert "Messages" not in sqs.receive_message(QueueUrl=queue)  # hints are not kept
    agent = client(url, "dynamodb", (made["AccessKeyId"], made["SecretAccessKey"]))
    assert agent.describe_table(TableName="t")["Table"]["TableName"] == "t"  # its key works


def test_a_torn_journal_record_is_dropped_and_the_rest_restored(
    durable: Launch, tmp_path: Path
) -> None:
    proc, url = durable()
    make_table(url)
    client(url, "dynamodb").put_item(TableName="t", Item={"id": {"S": "kept"}})
    crash(proc)
    (journal,) = sorted((tmp_path / "state").glob("journal-*.log"))
    with open(journal, "ab") as tail:  # a record whose write the crash cut short
        tail.write(b"\x10\x00\x00\x00\x01\x02\x03\x04half")
    _, url = durable()
    items = client(url, "dynamodb").scan(TableName="t")["Items"]
    assert items == [{"id": {"S": "kept"}}]


def test_the_journal_is_compacted_into_a_snapshot_and_disk_use_stays_bounded(
    durable: Launch, tmp_path: Path
) -> None:
    proc, url = durable()
    make_table(url)
    ddb = client(url, "dynamodb")
    state = tmp_path / "state"
    for i in range(3):
        for j in range(100):
            ddb.put_item(TableName="t", Item={"id": {"S": f"{j}"}, "round": {"N": str(i)}})
        proc.send_signal(signal.SIGTERM)  # each start compacts what it replayed
        proc.wait(30)
        proc, url = durable()
        ddb = client(url, "dynamodb")
        wait_until(
            lambda: (
                len(list(state.glob("snapshot-*.pickle"))) == 1
                and len(list(state.glob("journal-*.log"))) == 1
            ),
            timeout=30,
            what="the old snapshot and journal to be dropped",
        )
    rounds = {item["round"]["N"] for item in ddb.scan(TableName="t")["Items"]}
    assert rounds == {"2"}
    size = sum(p.stat().st_size for p in state.rglob("*") if p.is_file())
    assert size < 200_000, size


def test_state_of_another_moto_version_is_refused_and_left_as_it_is(
    durable: Launch, tmp_path: Path
) -> None:
    proc, url = durable()
    make_table(url)
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    meta = tmp_path / "state" / "format.json"
    written = json.loads(meta.read_text())
    meta.write_text(json.dumps({**written, "moto": "4.0.0"}))
    before = {p: p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file()}
    with pytest.raises(StateRefused) as refused:
        durable()
    message = str(refused.value)
    assert "\n" not in message and "moto 4.0.0" in message and str(tmp_path / "state") in message
    after = {p: p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file()}
    assert after == before
