"""The bucket policy's conditions against the requests clobi's S3 clients really send, a small
upload and a multipart one (moto does not evaluate bucket policies; AWS does, so the requests
are recorded here and the policy's Deny statements evaluated over them as IAM would).

A multipart upload asks for encryption in CreateMultipartUpload only: its parts and its
completion, authorized as s3:PutObject too, carry no encryption header. A policy denying
PutObject without the header (the usual recipe) refuses every part.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.aws import SINGLE_PUT_BYTES
from shared.session import Session

IMAGE = Path(__file__).resolve().parents[2] / "vm-image"
KEY = "s3:x-amz-server-side-encryption"
# The action IAM authorizes each S3 operation clobi's uploads use as.
ACTION = {
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
}


def _holds(operator: str, values: dict[str, Any], context: dict[str, str]) -> bool:
    """One condition operator of a statement over the request context (the operators the
    bucket policy uses)."""
    for key, wanted in values.items():
        wanted = wanted if isinstance(wanted, list) else [wanted]
        present = key in context
        if operator == "Null":
            ok = (not present) == (str(wanted[0]).lower() == "true")
        elif operator == "Bool":
            ok = present and context[key].lower() == str(wanted[0]).lower()
        elif operator == "StringNotEquals":  # a negated operator: true without the key
            ok = not present or context[key] not in wanted
        else:
            raise AssertionError(f"operator {operator} not evaluated here")
        if not ok:
            return False
    return True


def _matching(actions: str | list[str]) -> set[str]:
    listed = [actions] if isinstance(actions, str) else actions
    return set(ACTION.values()) if "s3:*" in listed else set(listed)


def denied(policy: dict[str, Any], action: str, context: dict[str, str]) -> list[str]:
    """The Sids of the Deny statements that refuse `action` with this request context."""
    return [
        s["Sid"]
        for s in policy["Statement"]
        if s["Effect"] == "Deny"
        and (
            s["Action"] == "s3:*"
            or action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
        )
        and all(_holds(op, values, context) for op, values in s.get("Condition", {}).items())
    ]


def _recorded_uploads(session: Session, tmp_path: Path) -> list[tuple[str, dict[str, str]]]:
    """(operation, condition context) of each request a small and a multipart upload make."""
    seen: list[tuple[str, dict[str, str]]] = []

    def record(request: Any, event_name: str, **_: Any) -> None:
        context = {"aws:SecureTransport": "true"}  # on AWS: https, always
        if KEY.split(":", 1)[1] in {k.lower() for k in request.headers}:
            value = request.headers["x-amz-server-side-encryption"]
            context[KEY] = value.decode() if isinstance(value, bytes) else value
        seen.append((event_name.rsplit(".", 1)[-1], context))

    session.aws.s3.meta.events.register("before-send.s3.*", record)
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"x" * 1024)
    big.write_bytes(b"x" * (SINGLE_PUT_BYTES + 1024))
    for path in (small, big):
        session.aws.upload(path, session.info.bucket, f"{session.info.prefix}{path.name}")
    return seen


def test_uploads_small_and_multipart_pass_the_bucket_policy_and_other_encryption_does_not(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    policy = json.loads((IMAGE / "iam" / "bucket-policy.json").read_text())
    requests = _recorded_uploads(make_session(), tmp_path)
    operations = {name for name, _ in requests}
    assert {"PutObject", "CreateMultipartUpload", "UploadPart"} <= operations
    assert any(KEY not in context for name, context in requests if name == "UploadPart")
    for name, context in requests:
        if name in ACTION:
            assert denied(policy, ACTION[name], context) == [], (name, context)
    put = ACTION["PutObject"]
    assert denied(policy, put, {"aws:SecureTransport": "true", KEY: "aws:fsx"}) == [
        "DenyOtherEncryption"
    ]
    assert denied(policy, put, {"aws:SecureTransport": "false", KEY: "AES256"}) == [
        "DenyInsecureTransport"
    ]


def test_the_bucket_encrypts_every_object_at_rest(make_session: Callable[..., Session]) -> None:
    """Whatever an upload asks (a part asks nothing), S3 encrypts it: the bucket's default."""
    session = make_session()
    rules = session.aws.s3.get_bucket_encryption(Bucket=session.info.bucket)
    (rule,) = rules["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
