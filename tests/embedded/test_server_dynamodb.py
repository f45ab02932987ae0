"""The embedded endpoint's DynamoDB keeps the promises clobi relies on: an index query pages
by what the index projects, a failed transaction changes nothing, and the pinned adjustments
answer exactly as an untouched moto does."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.exceptions import ClientError

from tests.embedded.clients import client


def test_an_index_query_pages_by_what_the_index_projects(aws_endpoint: str) -> None:
    """DynamoDB's 1 MB page of an index query counts the projected attributes only."""
    ddb = client(aws_endpoint, "dynamodb")
    ddb.create_table(
        TableName="narrow",
        AttributeDefinitions=[
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "kind", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_kind",
                "KeySchema": [
                    {"AttributeName": "kind", "KeyType": "HASH"},
                    {"AttributeName": "id", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["n"]},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    items = 2500  # 2.5 MB whole, about 0.1 MB as the index projects them
    for start in range(0, items, 25):
        ddb.batch_write_item(
            RequestItems={
                "narrow": [
                    {
                        "PutRequest": {
                            "Item": {
                                "id": {"S": f"{i:05d}"},
                                "kind": {"S": "k"},
                                "n": {"N": str(i)},
                                "padding": {"S": "x" * 1000},
                            }
                        }
                    }
                    for i in range(start, start + 25)
                ]
            }
        )
    query = {
        "TableName": "narrow",
        "KeyConditionExpression": "kind = :k",
        "ExpressionAttributeValues": {":k": {"S": "k"}},
    }
    page = ddb.query(IndexName="by_kind", **query)
    assert page["Count"] == items and "LastEvaluatedKey" not in page
    assert "padding" not in page["Items"][0]
    assert [int(i["n"]["N"]) for i in page["Items"]] == list(range(items))
    scan = ddb.scan(TableName="narrow")  # whole items: the table itself still pages at 1 MB
    assert "LastEvaluatedKey" in scan and scan["Count"] < items


def test_a_failed_transaction_leaves_every_item_as_it_was(aws_endpoint: str) -> None:
    """The embedded endpoint backs up only the touched items for rollback (a pinned moto
    adjustment); a cancelled transaction must still change nothing."""
    ddb = client(aws_endpoint, "dynamodb")
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


def _dynamodb_reads(ddb: Any) -> list[Any]:
    """The same writes, then every kind of read clobi makes, with and without projections."""
    ddb.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "g", "AttributeType": "S"},
            {"AttributeName": "n", "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_g",
                "KeySchema": [
                    {"AttributeName": "g", "KeyType": "HASH"},
                    {"AttributeName": "n", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["s", "m"]},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for i in range(5):
        item = {
            "id": {"S": f"j{i}"},
            "g": {"S": "a" if i % 2 else "b"},
            "n": {"N": str(i * 1.5)},
            "s": {"S": "caf\u00e9 \u2603"},
            "b": {"B": bytes([0, 255, i])},
            "t": {"BOOL": i % 2 == 0},
            "z": {"NULL": True},
            "l": {"L": [{"S": "x"}, {"N": "2"}, {"M": {"k": {"S": "v"}}}]},
            "m": {"M": {"deep": {"M": {"er": {"N": "7"}}}, "ss": {"SS": ["p", "q"]}}},
            "ns": {"NS": ["1", "2.5"]},
        }
        ddb.put_item(TableName="t", Item=item)
    out: list[Any] = [
        ddb.get_item(TableName="t", Key={"id": {"S": "j1"}}, ConsistentRead=True)["Item"],
        ddb.get_item(
            TableName="t",
            Key={"id": {"S": "j2"}},
            ProjectionExpression="s, #n, m.deep, l[2]",
            ExpressionAttributeNames={"#n": "n"},
        )["Item"],
        ddb.query(
            TableName="t",
            IndexName="by_g",
            KeyConditionExpression="g = :g",
            ExpressionAttributeValues={":g": {"S": "b"}},
        )["Items"],
        ddb.query(
            TableName="t",
            IndexName="by_g",
            KeyConditionExpression="g = :g",
            ExpressionAttributeValues={":g": {"S": "a"}},
            Limit=1,
        ),
        ddb.batch_get_item(RequestItems={"t": {"Keys": [{"id": {"S": "j3"}}]}})["Responses"],
        ddb.update_item(
            TableName="t",
            Key={"id": {"S": "j4"}},
            UpdateExpression="SET n = n + :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnValues="ALL_NEW",
        )["Attributes"],
        sorted(ddb.scan(TableName="t", ProjectionExpression="id, t")["Items"], key=str),
    ]
    out += _bigger_table_reads(ddb)
    out += _updates(ddb)
    for page in out[3:4]:
        page.pop("ResponseMetadata", None)
    return out


def _bigger_table_reads(ddb: Any) -> list[Any]:
    """Enough items for order and paging to matter: numbers that sort differently as text,
    several pages, counts, both directions, range conditions; an item just under and one
    just over the 400 KB limit."""
    for i in range(40):
        ddb.put_item(
            TableName="t",
            Item={
                "id": {"S": f"k{(i * 7) % 40:02d}"},
                "g": {"S": "c" if i % 3 else "d"},
                "n": {"N": str((i * 13) % 17 - 5)},  # ties on the range key too
                "s": {"S": "x" * (i * 50)},
            },
        )
    out: list[Any] = []
    for forward in (True, False):
        for limit in (None, 7):
            pages, start = [], None
            while True:
                kwargs: dict[str, Any] = {
                    "TableName": "t",
                    "IndexName": "by_g",
                    "KeyConditionExpression": "g = :g",
                    "ExpressionAttributeValues": {":g": {"S": "c"}},
                    "ScanIndexForward": forward,
                }
                if limit:
                    kwargs["Limit"] = limit
                if start:
                    kwargs["ExclusiveStartKey"] = start
                page = ddb.query(**kwargs)
                pages.append([page["Items"], page["Count"], page.get("LastEvaluatedKey")])
                start = page.get("LastEvaluatedKey")
                if not start or len(pages) > 10:
                    break
            out.append(pages)
    for condition, values in (
        ("g = :g AND n > :n", {":g": {"S": "c"}, ":n": {"N": "2"}}),
        ("g = :g AND n BETWEEN :a AND :b", {":g": {"S": "d"}, ":a": {"N": "-3"}, ":b": {"N": "9"}}),
    ):
        for select in ("COUNT", "ALL_PROJECTED_ATTRIBUTES"):
            page = ddb.query(
                TableName="t",
                IndexName="by_g",
                KeyConditionExpression=condition,
                ExpressionAttributeValues=values,
                Select=select,
            )
            out.append([page.get("Items"), page["Count"], page["ScannedCount"]])
    page = ddb.query(
        TableName="t",
        KeyConditionExpression="id = :id",
        ExpressionAttributeValues={":id": {"S": "k07"}},
    )
    out.append(page["Items"])
    for size in (399_000, 420_000):
        try:
            ddb.put_item(TableName="t", Item={"id": {"S": "big"}, "s": {"S": "y" * size}})
            out.append(len(ddb.get_item(TableName="t", Key={"id": {"S": "big"}})["Item"]["s"]["S"]))
        except ClientError as err:
            out.append(err.response["Error"]["Message"])
    return out


def _updates(ddb: Any) -> list[Any]:
    """Update expressions of every kind, each twice (parsed trees are reused by text), and
    the ones moto refuses."""
    out: list[Any] = []
    updates = [
        ("SET a = if_not_exists(a, :zero) + :one, l = list_append(if_not_exists(l, :e), :x)", {}),
        ("SET #m.k = :one REMOVE s ADD c :one, ss :set", {"#m": "m"}),
        ("SET a = :one, a = :zero", {}),  # two writes to one path
        ("SET a = :one SET b = :one", {}),  # two SET clauses
        ("SET id = :one", {}),  # a key attribute
        ("REMOVE nothing.here[3]", {}),
        ("SET q = :undefined, r = :one", {}),
    ]
    values = {
        ":zero": {"N": "0"},
        ":one": {"N": "1"},
        ":e": {"L": []},
        ":x": {"L": [{"S": "x"}]},
        ":set": {"SS": ["p"]},
    }
    for expression, names in updates * 2:
        kwargs: dict[str, Any] = {
            "TableName": "t",
            "Key": {"id": {"S": "u"}},
            "UpdateExpression": expression,
            "ReturnValues": "ALL_NEW",
        }
        if any(k in expression for k in values):
            kwargs["ExpressionAttributeValues"] = {
                k: v for k, v in values.items() if k in expression
            }
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if "#m" in expression:
            ddb.put_item(TableName="t", Item={"id": {"S": "u"}, "m": {"M": {}}, "s": {"S": "x"}})
        try:
            out.append(ddb.update_item(**kwargs)["Attributes"])
        except ClientError as err:
            out.append(err.response["Error"])
    return out


def test_the_tuned_dynamodb_answers_exactly_as_moto_does(aws_endpoint: str) -> None:
    """The pinned adjustments (plain JSON results, top-level projections) change no answer:
    the same calls against the embedded endpoint and against an untouched in-process moto."""
    from moto import mock_aws

    tuned = _dynamodb_reads(client(aws_endpoint, "dynamodb"))
    with mock_aws():
        plain = _dynamodb_reads(boto3.client("dynamodb", region_name="us-east-1"))
    assert _sets_sorted(tuned) == _sets_sorted(plain)


def _sets_sorted(value: Any) -> Any:
    """DynamoDB sets have no order (moto's own projection shuffles them)."""
    if isinstance(value, dict):
        return {
            k: sorted(v) if k in ("SS", "NS", "BS") else _sets_sorted(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_sets_sorted(v) for v in value]
    return value
