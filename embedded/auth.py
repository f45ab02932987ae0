"""The embedded endpoint's door: every request must carry a valid SigV4 signature made with
the endpoint's own key pair (or with the key of an IAM user created through it); everything
else is refused before moto sees it, moto's `/moto-api/` and clobi's stats included."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

# Hex digests stand for a signed body; anything else (UNSIGNED-PAYLOAD, streaming) does not.
_HEX = frozenset("0123456789abcdef")
MAX_BODY_BYTES = 64 * 1024**2  # clobi's largest request is an 8 MiB part or PutObject
OWNER_ONLY = ("/moto-api", "/_clobi")  # moto's admin API (reset, dump) and clobi's stats
SecretLookup = Callable[[str], "Key | None"]


@dataclass(frozen=True)
class Key:
    secret: str
    owner: bool  # the endpoint's own key (else an IAM user's, made through it)


@dataclass(frozen=True)
class Signed:
    """What the headers of a request claim, checked before its body is read."""

    key: str
    secret: str
    region: str
    service: str
    headers: list[str]
    signature: str
    stamp: str
    target: str  # the path and query as sent (the signature covers them)


class Refused(Exception):
    """A request the endpoint does not serve: why, and AWS's error code for it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_head(environ: dict[str, Any], secret_of: SecretLookup) -> Signed:
    """What can be refused from the headers alone (no body is read for a stranger): a SigV4
    Authorization by a known key, a signed body hash, a plain path, a bounded body."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        raise Refused("MissingAuthenticationToken", "the request is not signed (SigV4)")
    fields = _fields(auth[len("AWS4-HMAC-SHA256 ") :])
    try:
        key, date, region, service, terminator = fields["Credential"].split("/")
        signed = fields["SignedHeaders"].split(";")
        signature = fields["Signature"]
    except (KeyError, ValueError):
        raise Refused("IncompleteSignature", "malformed Authorization header") from None
    found = secret_of(key)
    if found is None:
        raise Refused("InvalidClientTokenId", "the access key is not this endpoint's")
    stamp = environ.get("HTTP_X_AMZ_DATE", "")
    if terminator != "aws4_request" or not stamp.startswith(date) or "host" not in signed:
        raise Refused("IncompleteSignature", "malformed credential scope")
    declared = environ.get("HTTP_X_AMZ_CONTENT_SHA256")
    if declared is not None and not (len(declared) == 64 and set(declared) <= _HEX):
        raise Refused("InvalidRequest", "the body must be signed (x-amz-content-sha256)")
    path = _raw_target(environ)
    if not path.startswith("/") or path.startswith("//"):
        raise Refused("InvalidRequest", "the request target must be a plain path")
    if path.startswith(OWNER_ONLY) and not found.owner:
        raise Refused("AccessDenied", "only the endpoint's own key may use its admin pages")
    if _length(environ) > MAX_BODY_BYTES:
        raise Refused("EntityTooLarge", f"a body is at most {MAX_BODY_BYTES} bytes here")
    return Signed(key, found.secret, region, service, signed, signature, stamp, path)


def check_body(environ: dict[str, Any], body: bytes, head: Signed) -> None:
    """Raise Refused unless the signature covers this very request and body."""
    declared = environ.get("HTTP_X_AMZ_CONTENT_SHA256")
    if declared is not None and hashlib.sha256(body).hexdigest() != declared:
        raise Refused("XAmzContentSHA256Mismatch", "the body is not the one signed")
    request = AWSRequest(
        method=environ.get("REQUEST_METHOD", "GET"),
        url=f"http://{environ.get('HTTP_HOST', '')}{head.target}",
        data=body,
        headers={name: _header(environ, name) for name in head.headers},
    )
    request.context["timestamp"] = head.stamp
    signer_type = S3SigV4Auth if head.service == "s3" else SigV4Auth
    signer = signer_type(Credentials(head.key, head.secret), head.service, head.region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected.encode(), head.signature.encode()):
        raise Refused("SignatureDoesNotMatch", "the signature does not match")


def _length(environ: dict[str, Any]) -> int:
    try:
        return int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise Refused("InvalidRequest", "a Content-Length that is no number") from None


def refusal(environ: dict[str, Any], refused: Refused) -> tuple[str, list[Any], bytes]:
    """A 403 answer in the error shape the request's protocol expects, so SDKs show the code."""
    code, message = refused.code, str(refused)
    auth = environ.get("HTTP_AUTHORIZATION", "")
    service = auth.split("Credential=", 1)[-1].split("/")[3:4] if "Credential=" in auth else []
    if environ.get("HTTP_X_AMZ_TARGET"):
        body = f'{{"__type":"{code}","message":"{message}"}}'.encode()
        return "403 Forbidden", [("Content-Type", "application/x-amz-json-1.0")], body
    if service == ["ec2"]:
        xml = f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        xml += "</Errors></Response>"
    elif service == ["s3"] or not service:
        xml = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    else:
        xml = f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
        xml += f"<Message>{message}</Message></Error></ErrorResponse>"
    return "403 Forbidden", [("Content-Type", "text/xml")], xml.encode()


def _fields(text: str) -> dict[str, str]:
    fields = {}
    for part in text.split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value
    return fields


def _raw_target(environ: dict[str, Any]) -> str:
    """The path and query exactly as the client sent them (the signature covers those)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return str(urlsplit(raw)._replace(scheme="", netloc="").geturl())
    query = environ.get("QUERY_STRING", "")
    return environ.get("PATH_INFO", "/") + (f"?{query}" if query else "")


def _header(environ: dict[str, Any], name: str) -> str:
    key = name.upper().replace("-", "_")
    if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        return str(environ.get(key, ""))
    return str(environ.get(f"HTTP_{key}", ""))


def sign(
    method: str, url: str, key: str, secret: str, body: bytes = b"", service: str = "clobi"
) -> dict[str, str]:
    """Headers that sign a plain HTTP request to the endpoint (its stats, moto's API; or a
    service's, which moto tells by the signature's scope)."""
    request = AWSRequest(method=method, url=url, data=body)
    signer_type = S3SigV4Auth if service == "s3" else SigV4Auth
    signer_type(Credentials(key, secret), service, "us-east-1").add_auth(request)
    return dict(request.headers.items())


def key_lookup(key: str, secret: str) -> SecretLookup:
    """The endpoint's own key, then the keys of IAM users made through it (by someone who
    held a key already: the IAM tests run each component with its own policy's key)."""

    def secret_of(access_key: str) -> Key | None:
        if hmac.compare_digest(access_key.encode(), key.encode()):
            return Key(secret, owner=True)
        from moto.iam.models import iam_backends

        for account in list(iam_backends.values()):
            for backend in list(account.values()):
                found = backend.access_keys.get(access_key)
                # A user's active key; not a temporary one (its token is not checked here).
                if found is not None and found.status == "Active" and found.user_name:
                    return Key(str(found.secret_access_key), owner=False)
        return None

    return secret_of
