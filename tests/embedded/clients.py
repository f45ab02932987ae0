"""boto3 clients of the embedded endpoint, signed with its own key as `clobi local up` leaves
it (spawned processes build theirs here too)."""

from __future__ import annotations

import boto3

from shared import localkeys


def client(endpoint: str, service: str):  # type: ignore[no-untyped-def]
    key, secret = local_keys()
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


def local_keys() -> tuple[str, str]:
    keys = localkeys.read(localkeys.default_path())  # the endpoint's, as `clobi local up` left
    assert keys is not None
    return keys
