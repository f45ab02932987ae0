"""An HTTP fault proxy between clobi's components and the moto server.

Every request is read whole, matched against the rules in order, and then passed on, delayed,
held forever (blackhole), refused with a TCP reset, passed on with its response dropped (the
request takes effect, the caller sees a broken connection), or answered with an AWS
throttling error — per request, so a test can break exactly one kind of call, for one
component, a given number of times. Components reach it through the session's `endpoint_url`;
the test's own checks go to the moto server directly.

    with FaultProxy(endpoint) as proxy:
        session = make_session(endpoint_url=proxy.url)
        proxy.add("drop_response", match=operation("dynamodb.UpdateItem", body=b":queued"))
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlparse

from embedded.wire import operation as _operation
from tests.faults.unkind import Unkind, UnkindEndpoint

Mode = Literal["pass", "delay", "blackhole", "reset", "drop_response", "throttle", "fail"]


@dataclass
class Request:
    operation: str  # "dynamodb.UpdateItem", "sqs.ReceiveMessage", "s3.PUT", ...
    headers: dict[str, str]
    body: bytes

    @property
    def component(self) -> str:
        """`agent`, `rm` or `cli` from the User-Agent's app id (AWS_SDK_UA_APP_ID), or ''."""
        agent = self.headers.get("user-agent", "")
        return agent.split("app/clobi-", 1)[1].split()[0] if "app/clobi-" in agent else ""


Match = Callable[[Request], bool]


def operation(name: str = "", *, body: bytes = b"", component: str = "") -> Match:
    """Requests of one operation (prefix match: "sqs." is every SQS call), optionally whose
    body holds `body`, optionally from one component."""
    return lambda r: (
        r.operation.startswith(name)
        and body in r.body
        and (not component or r.component == component)
    )


@dataclass
class Rule:
    mode: Mode
    match: Match
    times: int | None  # None: until removed
    delay_s: float = 0.0
    every: int = 1  # fire on every n-th match (throttle 1 in 3, say)
    on_match: Callable[[Request], None] | None = None
    code: str = ""  # the AWS error code a `fail` rule answers
    fired: int = 0
    seen: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, request: Request) -> bool:
        if not self.match(request):
            return False
        with self._lock:
            if self.times is not None and self.fired >= self.times:
                return False
            self.seen += 1
            if self.seen % self.every:
                return False
            self.fired += 1
        if self.on_match is not None:
            self.on_match(request)
        return True


class FaultProxy:
    def __init__(self, upstream: str, *, unkind: Unkind | None = None) -> None:
        """`unkind`: behave as AWS does where moto is kinder (tests/faults/unkind.py), for
        every request no rule takes; `self.unkind.injected` counts what it did. Kind by
        default, yet learning the tables' keys, so `self.unkind.become(...)` can follow."""
        self.unkind = UnkindEndpoint(unkind or Unkind())
        target = urlparse(upstream)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.rules: list[Rule] = []
        self.counts: Counter[str] = Counter()
        self._released = threading.Event()  # set: blackholed requests give up
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def add(
        self,
        mode: Mode,
        match: Match | None = None,
        *,
        times: int | None = None,
        delay_s: float = 0.0,
        every: int = 1,
        on_match: Callable[[Request], None] | None = None,
        code: str = "",
    ) -> Rule:
        """`fail` answers the AWS error `code` (InsufficientInstanceCapacity, say)."""
        rule = Rule(mode, match or (lambda _: True), times, delay_s, every, on_match, code)
        self.rules.append(rule)
        self._released.clear()
        return rule

    def clear(self) -> None:
        """Back to passing everything; requests held in a blackhole are dropped."""
        self.rules.clear()
        self._released.set()

    def close(self) -> None:
        self.clear()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def rule_for(self, request: Request) -> Rule | None:
        self.counts[request.operation] += 1
        for rule in list(self.rules):
            if rule.take(request):
                return rule
        return None


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, *_: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def _handle(self) -> None:
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        environ = {
            "HTTP_AUTHORIZATION": headers.get("authorization", ""),
            "HTTP_X_AMZ_TARGET": headers.get("x-amz-target", ""),
            "REQUEST_METHOD": self.command,
        }
        request = Request(_operation(environ, body), headers, body)
        rule = self.owner.rule_for(request)
        mode = rule.mode if rule else "pass"
        if mode == "reset":
            return self._reset()
        if mode == "blackhole":
            self.owner._released.wait()
            return self._reset()
        if mode == "throttle":
            return self._throttle(request)
        if mode == "fail" and rule is not None:
            return self._error(request, rule.code, 400)
        if mode == "delay" and rule is not None:
            time.sleep(rule.delay_s)
        unkind = self.owner.unkind if rule is None else None
        answer = unkind.before(request) if unkind is not None else None
        if answer is not None:
            return self._answer(*answer)
        try:
            status, reason, response_headers, payload = self._forward(body)
        except OSError:
            return self._reset()
        if mode == "drop_response":
            return self._reset()
        if unkind is not None:
            changed = unkind.after(request, status, payload)
            if changed != payload:  # DynamoDB's answers carry their checksum
                payload = changed
                response_headers = [
                    (n, v) for n, v in response_headers if n.lower() != "x-amz-crc32"
                ]
                response_headers.append(("x-amz-crc32", str(zlib.crc32(payload))))
        self.send_response(status, reason)
        for name, value in response_headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        if self._upstream is None:
            self._upstream = http.client.HTTPConnection(*self.owner.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
        headers["Content-Length"] = str(len(body))
        try:
            self._upstream.request(self.command, self.path, body=body, headers=headers)
            response = self._upstream.getresponse()
        except (OSError, http.client.HTTPException):
            self._upstream.close()
            self._upstream = None
            raise OSError("upstream failed") from None
        return response.status, response.reason, response.getheaders(), response.read()

    def _reset(self) -> None:
        """Close with a TCP reset, no response."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _answer(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _throttle(self, request: Request) -> None:
        if request.headers.get("x-amz-target"):  # JSON protocols: DynamoDB, SQS
            self._error(request, "ThrottlingException", 400)
        elif request.operation.startswith("s3."):
            self._error(request, "SlowDown", 503)
        else:  # query protocols: EC2, older SQS
            self._error(request, "Throttling", 400)

    def _error(self, request: Request, code: str, status: int) -> None:
        """An AWS error answer with `code`, in the request's protocol."""
        message = f"{code} (fault proxy)"
        if request.headers.get("x-amz-target"):  # JSON protocols: DynamoDB, SQS
            payload = json.dumps({"__type": code, "message": message}).encode()
            content_type = "application/x-amz-json-1.0"
        elif request.operation.startswith("s3."):
            payload = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
            content_type = "application/xml"
        else:  # query protocols: EC2, older SQS
            payload = (
                f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message>"
                "</Error></Errors></Response>"
            ).encode()
            content_type = "text/xml"
        self._answer(status, content_type, payload)
