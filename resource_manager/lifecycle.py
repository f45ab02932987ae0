"""Session lifecycle: create a session's queues, tables and S3 prefix; clean them all up again."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from embedded import daemon as endpoint
from resource_manager.wheel import upload_wheel
from shared import naming, queues, sessionfile
from shared.aws import Aws, translated
from shared.errors import AwsError, ConfigError
from shared.jobindex import DISPATCH_FIELDS, DISPATCH_INDEX, STATE_INDEX, STATUS_FIELDS
from shared.models import SessionConfig, SessionInfo
from shared.timeutil import utcnow

Report = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def create_session(config: SessionConfig, report: Report = _quiet) -> SessionInfo:
    """Create everything a session needs and write its session file. On failure, what was
    created is removed again and the error is raised."""
    for release, spec in config.releases.items():
        for source in (spec.archive, spec.image):
            if source and not Path(source).is_file():
                raise ConfigError(f"release {release}: {source} does not exist")
    endpoint_url = endpoint.resolve(config.endpoint_url, start=True)
    if config.endpoint_url == endpoint.LOCAL:
        report(f"embedded AWS endpoint at {endpoint_url}")
    session_id = naming.new_session_id(config.name)
    aws = Aws(config.region, endpoint_url)
    prefix = naming.session_prefix(session_id)
    created = _Created(aws)
    try:
        _ensure_bucket(aws, config.bucket, config.region)
        created.bucket, created.prefix = config.bucket, prefix
        queue_urls = queues.create(aws, session_id, config.priorities, created.queues)
        report(f"queues p1..p{config.priorities} and a dead-letter queue")
        tables = _create_tables(aws, session_id, created)
        report("tables " + ", ".join(tables.values()))
        releases, release_digests = _upload_releases(aws, config, prefix, report)
        snapshots = {name: spec.snapshot for name, spec in config.releases.items() if spec.snapshot}
        agent_wheel = upload_wheel(aws, config, prefix)
        if agent_wheel:
            report(f"wheel {agent_wheel.filename} uploaded (sha256 {agent_wheel.sha256[:12]}...)")
    except (AwsError, ConfigError, OSError):
        created.remove()
        raise
    info = SessionInfo(
        id=session_id,
        created_at=utcnow(),
        region=config.region,
        endpoint_url=endpoint_url,
        bucket=config.bucket,
        prefix=prefix,
        queue_urls=queue_urls,
        tables=tables,
        releases=releases,
        release_digests=release_digests,
        snapshots=snapshots,
        agent_wheel=agent_wheel,
        config=config,
    )
    sessionfile.save(info)
    return info


class _Created:
    """What a half-made session holds, so a failed create leaves nothing behind."""

    def __init__(self, aws: Aws) -> None:
        self.aws = aws
        self.queues: list[str] = []
        self.tables: list[str] = []
        self.bucket: str | None = None
        self.prefix: str | None = None

    def remove(self) -> None:
        for url in self.queues:
            _ignore_missing(partial(queues.delete, self.aws, url))
        for table in self.tables:
            _ignore_missing(partial(self.aws.ddb.delete_table, TableName=table))
        if self.bucket and self.prefix:
            delete_prefix(self.aws, self.bucket, self.prefix)


def _ensure_bucket(aws: Aws, bucket: str, region: str) -> None:
    try:
        with translated(f"check bucket {bucket}"):
            aws.s3.head_bucket(Bucket=bucket)
        return
    except AwsError as err:
        if err.code not in ("404", "NoSuchBucket", "NotFound"):
            raise
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    with translated(f"create bucket {bucket}"):
        aws.s3.create_bucket(**kwargs)
    # Every object encrypted at rest, whatever asked for it; uploads that ask for another
    # kind are refused by the bucket policy (vm-image/iam/bucket-policy.json).
    with translated(f"encrypt bucket {bucket}"):
        aws.s3.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )


def _create_tables(aws: Aws, session_id: str, created: _Created) -> dict[str, str]:
    tags = [{"Key": naming.TAG_SESSION, "Value": session_id}]
    names = {kind: naming.table_name(session_id, kind) for kind in naming.TABLE_KINDS}
    specs: dict[str, dict[str, Any]] = {
        "jobs": {
            "AttributeDefinitions": [
                _attr("id", "S"),
                _attr("state", "S"),
                _attr("dq", "S"),
                _attr("seq", "N"),
            ],
            "KeySchema": [_key("id", "HASH")],
            "GlobalSecondaryIndexes": [
                # Status reads need the status fields only: smaller pages, fewer requests.
                _index(STATE_INDEX, "state", "id", STATUS_FIELDS),
                _index(DISPATCH_INDEX, "dq", "seq", DISPATCH_FIELDS),
            ],
        },
        "vms": {"AttributeDefinitions": [_attr("id", "S")], "KeySchema": [_key("id", "HASH")]},
        "events": {
            "AttributeDefinitions": [_attr("job_id", "S"), _attr("sk", "S")],
            "KeySchema": [_key("job_id", "HASH"), _key("sk", "RANGE")],
        },
    }
    for kind, spec in specs.items():
        with translated(f"create table {names[kind]}"):
            aws.ddb.create_table(
                TableName=names[kind], BillingMode="PAY_PER_REQUEST", Tags=tags, **spec
            )
        created.tables.append(names[kind])
    for name in names.values():
        with translated(f"wait for table {name}"):
            aws.ddb.get_waiter("table_exists").wait(
                TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
            )
    return names


def _attr(name: str, kind: str) -> dict[str, str]:
    return {"AttributeName": name, "AttributeType": kind}


def _key(name: str, kind: str) -> dict[str, str]:
    return {"AttributeName": name, "KeyType": kind}


def _index(name: str, hash_key: str, range_key: str, fields: tuple[str, ...]) -> dict[str, Any]:
    return {
        "IndexName": name,
        "KeySchema": [_key(hash_key, "HASH"), _key(range_key, "RANGE")],
        "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(fields)},
    }


def _upload_releases(
    aws: Aws, config: SessionConfig, prefix: str, report: Report
) -> tuple[dict[str, str], dict[str, str]]:
    """Each release's S3 key, and the sha256 of what was uploaded (agents check it)."""
    keys, digests = {}, {}
    for release, spec in config.releases.items():
        source = spec.archive or spec.image
        if not source:
            continue
        key = naming.release_key(prefix, release, image=spec.image is not None)
        with open(source, "rb") as data:
            digests[release] = hashlib.file_digest(data, "sha256").hexdigest()
        with translated(f"upload release {release}"):
            aws.s3.upload_file(source, config.bucket, key)
        report(f"release {release} uploaded")
        keys[release] = key
    return keys, digests


# --- cleanup -------------------------------------------------------------------------------


def cleanup_session(info: SessionInfo, report: Report = _quiet) -> dict[str, int]:
    """Delete the session's queues, tables and S3 objects and its session file. Idempotent.
    (VMs are terminated by the caller first, through the drivers.)"""
    aws = Aws(info.region, info.endpoint_url)
    removed = {"queues": 0, "tables": 0, "objects": 0}
    for url in info.queue_urls.values():
        removed["queues"] += _ignore_missing(partial(queues.delete, aws, url))
    report(f"deleted {removed['queues']} queues")
    for table in info.tables.values():
        removed["tables"] += _ignore_missing(partial(aws.ddb.delete_table, TableName=table))
    report(f"deleted {removed['tables']} tables")
    removed["objects"] = delete_prefix(aws, info.bucket, info.prefix)
    report(f"deleted {removed['objects']} S3 objects under s3://{info.bucket}/{info.prefix}")
    sessionfile.remove(info.id)
    return removed


def delete_prefix(aws: Aws, bucket: str, prefix: str) -> int:
    count = 0
    paginator = aws.s3.get_paginator("list_objects_v2")
    try:
        with translated(f"list s3://{bucket}/{prefix}"):
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
                if keys:
                    aws.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                    count += len(keys)
    except AwsError as err:
        if err.code != "NoSuchBucket":
            raise
    return count


_MISSING = {
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "ResourceNotFoundException",
}


def _ignore_missing(call: Callable[[], Any]) -> int:
    """Run a delete; 1 if it deleted something, 0 if it was gone already."""
    try:
        with translated("delete"):
            call()
        return 1
    except AwsError as err:
        if err.code in _MISSING:
            return 0
        raise
