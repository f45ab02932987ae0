"""Which requests change the state the embedded endpoint keeps, as journal records, and how
each is replayed through moto at a restore (design: docs/design.md, "Durable state")."""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from embedded import snapshot

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
READS = ("Get", "List", "Describe", "Query", "Scan", "BatchGet", "TransactGet", "Simulate")
# SQS messages are hints: after a restore the dispatch window sends them again.
MESSAGES = frozenset(
    f"{verb}{batch}"
    for verb in ("SendMessage", "DeleteMessage", "ChangeMessageVisibility")
    for batch in ("", "Batch")
) | {"ReceiveMessage", "PurgeQueue"}
KEPT_ENVIRON = frozenset(
    [
        "REQUEST_METHOD",
        "PATH_INFO",
        "QUERY_STRING",
        "CONTENT_TYPE",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "SCRIPT_NAME",
        "RAW_URI",
        "REQUEST_URI",
        "wsgi.url_scheme",
    ]
)


def record_of(
    environ: dict[str, Any], body: bytes, op: str, status: str, payload: bytes, blobs: Path
) -> bytes | None:
    """The journal record of a request moto has just answered (under the request lock), or
    None when it changed nothing the endpoint keeps."""
    if not status.startswith("2"):
        return None
    service, _, name = op.partition(".")
    method = environ.get("REQUEST_METHOD", "")
    if environ.get("PATH_INFO", "") == "/moto-api/reset" and method == "POST":
        return _request(environ, body)  # replayed, it empties what was restored before it
    if service == "s3":
        return _s3_record(environ, body, blobs)
    if service not in ("dynamodb", "sqs", "iam") or name.startswith(READS) or name in MESSAGES:
        return None
    if op == "iam.CreateAccessKey":  # its id and secret are random: the replay takes these
        return pickle.dumps(("iam_key", _environ(environ), body, _key_of(payload)))
    return _request(environ, body)


def _request(environ: dict[str, Any], body: bytes) -> bytes:
    return pickle.dumps(("request", _environ(environ), body))


def _environ(environ: dict[str, Any]) -> dict[str, str]:
    return {
        k: v
        for k, v in environ.items()
        if isinstance(v, str)
        and (k.startswith("HTTP_") or k in KEPT_ENVIRON or k == "wsgi.url_scheme")
    }


def _s3_record(environ: dict[str, Any], body: bytes, blobs: Path) -> bytes | None:
    """S3 requests replay as they came, except multipart uploads: their ids are random, so
    only the object a completed upload made is kept (a crash mid-upload fails the upload)."""
    method = environ.get("REQUEST_METHOD", "")
    query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    if method not in ("PUT", "POST", "DELETE"):
        return None
    if "uploads" in query or ("uploadId" in query and method != "POST"):
        return None  # create, upload a part, abort: nothing kept yet
    if "uploadId" not in query:
        return _request(environ, body)
    bucket, _, key = unquote(environ.get("PATH_INFO", "")).lstrip("/").partition("/")
    found = _s3_object(bucket, key)
    if found is None:
        return None
    return pickle.dumps(("s3_object", bucket, key, snapshot.pickled_key(found, blobs)))


def _s3_object(bucket: str, key: str) -> Any:
    from moto.s3.models import s3_backends

    for account in list(s3_backends.values()):
        for backend in list(account.values()):
            if bucket in backend.buckets:
                return backend.buckets[bucket].keys.get(key)
    return None


def _key_of(payload: bytes) -> tuple[str, str]:
    text = payload.decode(errors="replace")
    found = [
        re.search(f"<{tag}>([^<]+)</{tag}>", text) for tag in ("AccessKeyId", "SecretAccessKey")
    ]
    return (found[0].group(1) if found[0] else "", found[1].group(1) if found[1] else "")


def replay(app: App, record: bytes, blobs: Path) -> None:
    """Apply one journal record to moto (at a restore, before the endpoint serves)."""
    kind, *rest = pickle.loads(record)
    if kind == "request":
        call(app, *rest)
    elif kind == "iam_key":
        environ, body, (key_id, secret) = rest
        _status, payload = call(app, environ, body)
        _rename_key(_key_of(payload)[0], key_id, secret)
    elif kind == "s3_object":
        bucket, key, data = rest
        from moto.s3.models import s3_backends

        for account in list(s3_backends.values()):
            for backend in list(account.values()):
                if bucket in backend.buckets:
                    backend.buckets[bucket].keys[key] = snapshot.unpickled_key(data, blobs)


def call(app: App, environ: dict[str, str], body: bytes) -> tuple[str, bytes]:
    """One request through moto's app, as the endpoint makes it; its status and answer."""
    started: list[str] = []
    env: dict[str, Any] = dict(environ)
    env.update({"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))})
    env.setdefault("wsgi.url_scheme", "http")
    result = app(env, lambda status, headers, exc_info=None: started.append(status))
    payload = b"".join(result)
    getattr(result, "close", lambda: None)()
    return (started[0] if started else "500"), payload


def _rename_key(replayed: str, key_id: str, secret: str) -> None:
    from moto.iam.models import iam_backends

    for account in list(iam_backends.values()):
        for backend in list(account.values()):
            key = backend.access_keys.pop(replayed, None)
            if key is not None:
                key.access_key_id, key.secret_access_key = key_id, secret
                backend.access_keys[key_id] = key
