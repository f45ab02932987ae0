"""A fake EC2 instance-metadata service (IMDSv2 token flow) on 127.0.0.1.

Serves user-data, metadata paths and, on demand, a spot interruption notice; refuses (and
counts) every request without a token, as an instance launched with HttpTokens=required does.
Point an agent at it with AWS_EC2_METADATA_SERVICE_ENDPOINT=`server.url`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "fake-imds-token"


class FakeImds(ThreadingHTTPServer):
    user_data = ""
    interrupted = False  # True: the spot interruption notice is there
    refused = 0  # requests without a token (IMDSv1): refused, and counted

    def __init__(self, paths: dict[str, str] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.paths = dict(paths or {})  # metadata path -> answer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeImds

    def log_message(self, *args: object) -> None:
        pass

    def do_PUT(self) -> None:
        if self.path == "/latest/api/token" and self.headers.get(
            "X-aws-ec2-metadata-token-ttl-seconds"
        ):
            self._reply(200, TOKEN)
        else:
            self._reply(400, "")

    def do_GET(self) -> None:
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            self.server.refused += 1
            self._reply(401, "")
        elif self.path == "/latest/user-data":
            self._reply(200, self.server.user_data)
        elif self.path == "/latest/meta-data/spot/instance-action" and self.server.interrupted:
            self._reply(200, json.dumps({"action": "terminate", "time": "2026-11-22T06:00:00Z"}))
        elif self.path in self.server.paths:
            self._reply(200, self.server.paths[self.path])
        else:
            self._reply(404, "")

    def _reply(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def fake_imds(paths: dict[str, str] | None = None) -> Iterator[FakeImds]:
    server = FakeImds(paths)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
