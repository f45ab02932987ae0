"""The AWS access layer: boto3 clients built once per endpoint, botocore errors translated."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import urlparse

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from shared import localkeys
from shared.errors import AwsError, ConditionFailed, Contention

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def is_loopback(endpoint_url: str | None) -> bool:
    return bool(endpoint_url) and urlparse(endpoint_url).hostname in _LOOPBACK


# Refusals that applied nothing and pass: throttling (left over when botocore's own retries
# or its retry quota ran out) and conflicts with a transaction under way.
CONTENTION_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
        "TransactionConflictException",
        "TransactionInProgressException",
    }
)
# Cancellation reasons of a transaction that may go through if made again.
_PASSING_REASONS = frozenset(
    {"None", "TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn botocore errors raised inside into AwsError: ConditionFailed for lost conditions,
    Contention for throttling and conflicts (nothing applied: try again after a pause)."""
    try:
        yield
    except ClientError as err:
        error = err.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = error.get("Message", "")
        cancelled = code == "TransactionCanceledException"
        if code == "ConditionalCheckFailedException" or (
            cancelled and _condition_among(err.response)
        ):
            raise ConditionFailed(f"{what}: condition failed", code) from err
        text = f"{what}: {code}: {message}".rstrip(": ")
        if code in CONTENTION_CODES or (cancelled and _passing(err.response)):
            raise Contention(text, code) from err
        raise AwsError(text, code) from err
    except BotoCoreError as err:
        raise AwsError(f"{what}: {err}", type(err).__name__) from err
    except ResponseParserError as err:  # an endpoint's error page instead of an AWS reply
        first_line = str(err).splitlines()[0]
        raise AwsError(f"{what}: {first_line}", type(err).__name__) from err


def _condition_among(response: Mapping[str, Any]) -> bool:
    """Whether a cancelled transaction failed a condition (not a conflict or throttling)."""
    reasons = response.get("CancellationReasons") or []
    if not reasons:  # some endpoints only say it in the message
        return "ConditionalCheckFailed" in str(response.get("Error", {}).get("Message", ""))
    return any(r.get("Code") == "ConditionalCheckFailed" for r in reasons)


def _passing(response: Mapping[str, Any]) -> bool:
    """Whether a cancelled transaction met only conflicts or throttling."""
    reasons = {str(r.get("Code")) for r in response.get("CancellationReasons") or []}
    return bool(reasons - {"None"}) and reasons <= _PASSING_REASONS


SINGLE_PUT_BYTES = 8 * 1024 * 1024  # boto3's own multipart threshold


class Aws:
    """Thread-safe holder of one boto3 client per service for one region and endpoint."""

    def __init__(
        self,
        region: str,
        endpoint_url: str | None = None,
        *,
        retries: int = 4,
        read_timeout_s: float = 30.0,
        pool_size: int = 32,
        profile: str | None = None,
    ) -> None:
        """`profile`: sign with that AWS profile (a local cloud's `aws_profile`); else, for a
        loopback endpoint, with the embedded endpoint's key when this machine has one; else
        with boto3's usual credential chain."""
        self.region = region
        self.endpoint_url = endpoint_url
        self._profile = profile
        self._session = boto3.session.Session(region_name=region, profile_name=profile)
        # The retry mode, chosen: `standard` (jittered exponential backoff, the transient and
        # throttling errors AWS lists) with `retries` retries, not `adaptive` (its client-side
        # rate limiter would hold every call of the process, the lease renewals too, behind a
        # throttled bulk read). Its retry quota is per client and drains under sustained
        # throttling (5 units a throttled retry, 500 in all): past it botocore retries nothing,
        # so what must get through retries contention itself (shared/backoff.py), and the
        # lease path has a client of its own (`urgent`).
        self._config = Config(
            retries={"max_attempts": retries, "mode": "standard"},
            connect_timeout=5,
            read_timeout=read_timeout_s,
            max_pool_connections=pool_size,
        )
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str, endpoint_url: str | None = None) -> Any:
        with self._lock:
            key = f"{service}@{endpoint_url or ''}"
            if key not in self._clients:
                self._clients[key] = self._make(service, endpoint_url or self.endpoint_url)
            return self._clients[key]

    def unretried(self, service: str) -> Any:
        """A client that never retries by itself: for a call whose caller makes its retry
        safe (EC2 RunInstances: find the VM by its tag first, then send the same token)."""
        with self._lock:
            key = f"{service}@once"
            if key not in self._clients:
                once = self._config.merge(Config(retries={"total_max_attempts": 1}))
                self._clients[key] = self._make(service, self.endpoint_url, once)
            return self._clients[key]

    @property
    def urgent(self) -> Any:
        """The DynamoDB client of the lease path (lease renewals, VM heartbeats): its own
        retry quota, which bulk traffic cannot drain, and no retries of its own, since
        botocore's throttling backoff (up to 20 s a pause) would outlast a lease: its callers
        retry contention with short pauses within their deadline (backoff.retried)."""
        return self.unretried("dynamodb")

    def _make(self, service: str, endpoint_url: str | None, config: Config | None = None) -> Any:
        kwargs: dict[str, Any] = {"config": config or self._config}
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
        if is_loopback(endpoint_url) and self._profile is None:
            keys = localkeys.read(localkeys.default_path())
            if keys is not None:
                kwargs["aws_access_key_id"], kwargs["aws_secret_access_key"] = keys
        client = self._session.client(service, **kwargs)
        if service == "s3":  # encrypted at rest, as the session bucket's policy asks
            for operation in ("PutObject", "CreateMultipartUpload"):
                client.meta.events.register(f"before-parameter-build.s3.{operation}", _encrypt)
        return client

    @property
    def sqs(self) -> Any:
        return self.client("sqs")

    @property
    def ddb(self) -> Any:
        return self.client("dynamodb")

    @property
    def s3(self) -> Any:
        return self.client("s3")

    def upload(self, path: str | os.PathLike[str], bucket: str, key: str) -> None:
        """A file to S3: one PutObject when it is small (no transfer threads, one request),
        boto3's managed multipart upload when it is big."""
        if os.path.getsize(path) > SINGLE_PUT_BYTES:
            self.s3.upload_file(str(path), bucket, key)
            return
        with open(path, "rb") as body:
            self.s3.put_object(Bucket=bucket, Key=key, Body=body)


def _encrypt(params: dict[str, Any], **_: Any) -> None:
    params.setdefault("ServerSideEncryption", "AES256")


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict to a DynamoDB item (None values are left out)."""
    return {k: _serializer.serialize(_plain(v)) for k, v in values.items() if v is not None}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _python(_deserializer.deserialize(v)) for k, v in item.items()}


def to_value(value: Any) -> dict[str, Any]:
    return _serializer.serialize(_plain(value))


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _python(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [_python(v) for v in value]
    if isinstance(value, dict):
        return {k: _python(v) for k, v in value.items()}
    if isinstance(value, set):
        return {_python(v) for v in value}
    return value
