"""What the embedded endpoint reads of a request before moto sees it (its body, its operation,
its long poll) and of moto's answer (whether it holds messages)."""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import parse_qsl

from embedded.auth import Refused


def operation(environ: dict[str, Any], body: bytes) -> str:
    """`service.Operation` of a request, as far as cheaply known (S3: `s3.<METHOD>`)."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    scope = (
        auth.split("Credential=", 1)[1].split(",", 1)[0].split("/") if "Credential=" in auth else []
    )
    service = scope[3] if len(scope) > 3 else "?"
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return f"{service}.{target.rsplit('.', 1)[-1]}"
    if b"Action=" in body[:200]:
        action = dict(parse_qsl(body[:500].decode(errors="replace"))).get("Action", "?")
        return f"{service}.{action}"
    return f"{service}.{environ.get('REQUEST_METHOD', '?')}"


def read_body(environ: dict[str, Any], limit: int) -> bytes:
    """The request's body, of at most `limit` bytes (Refused beyond: a chunked body says its
    length only by ending)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ["wsgi.input"]
    if length > 0:
        return bytes(stream.read(min(length, limit)))
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        body = bytes(stream.read(limit + 1))
        if len(body) > limit:
            raise Refused("EntityTooLarge", f"a body is at most {limit} bytes here")
        return body
    return b""


def long_poll_s(environ: dict[str, Any], body: bytes) -> float:
    """WaitTimeSeconds of an SQS ReceiveMessage, else 0. The request itself is passed on
    unchanged: its signature covers the body (checked when IAM enforcement is on)."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    wait: Any = 0
    if target == "AmazonSQS.ReceiveMessage":
        wait = json.loads(body or b"{}").get("WaitTimeSeconds") or 0
    elif b"Action=ReceiveMessage" in body:
        wait = dict(parse_qsl(body.decode())).get("WaitTimeSeconds") or 0
    try:
        seconds = float(wait)
    except (TypeError, ValueError):
        return 0.0
    return min(max(seconds, 0.0), 20.0) if math.isfinite(seconds) else 0.0  # SQS's bounds


def has_messages(payload: bytes) -> bool:
    return b'"Messages"' in payload or b"<Message>" in payload
