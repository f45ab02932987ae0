"""The embedded AWS endpoint: a moto server on 127.0.0.1 that keeps the promises clobi relies on.

moto's threaded server does not make DynamoDB conditional writes atomic under concurrency, and
its SQS can deliver a message twice under concurrent receive/delete. We serialize request
handling (one lock around each request) and wait out SQS long polls in short steps outside the
lock, so a long poll never blocks other clients, and a long poll whose client died (an agent
killed mid-poll) ends instead of taking a message no one will read. Connections are kept alive
(werkzeug's own server closes each after one answer). `clobi local` and the tests use this
launcher.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from embedded import wire
from embedded.auth import (
    MAX_BODY_BYTES,
    Refused,
    SecretLookup,
    check_body,
    check_head,
    key_lookup,
    refusal,
)
from embedded.state import DurableState, StateRefused
from embedded.tuning import speed_up_moto
from shared import localkeys
from shared.errors import EndpointError
from shared.home import append_private, private_dir, write_private

log = logging.getLogger(__name__)
POLL_STEP_S = 0.05
STATS_PATH = "/_clobi/stats"
DRAINED = "clobi.body_read"  # environ flag: the body is read, the connection can go on
StartResponse = Callable[..., Any]


class SerializedApp:
    """WSGI middleware: one request at a time inside the backend, long polls outside the lock."""

    def __init__(
        self,
        app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]],
        secret_of: SecretLookup,
        state: DurableState | None = None,
    ) -> None:
        self._app = app
        self.state = state
        self._secret_of = secret_of
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.busy: dict[str, float] = defaultdict(float)  # backend CPU seconds per operation
        # CLOBI_ENDPOINT_PROFILE=FILE: profile request handling, written at shutdown.
        self.profile: cProfile.Profile | None = (
            cProfile.Profile() if os.environ.get("CLOBI_ENDPOINT_PROFILE") else None
        )

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:  # a stranger's body is never read: the connection is closed instead
            head = check_head(environ, self._secret_of)
            body = wire.read_body(environ, MAX_BODY_BYTES)
            environ[DRAINED] = True
            check_body(environ, body, head)
        except Refused as refused:
            status, headers, payload = refusal(environ, refused)
            start_response(status, headers)
            return [payload]
        if environ.get("PATH_INFO", "").startswith(STATS_PATH):
            return self._stats(environ, start_response)
        operation = wire.operation(environ, body)
        self.counts[operation] += 1
        wait_s = wire.long_poll_s(environ, body)  # waited out here: the backend never waits
        deadline = time.monotonic() + wait_s
        while True:
            began = time.thread_time()
            status, headers, payload = self._call_locked(environ, body, operation)
            self.busy[operation] += time.thread_time() - began
            if wait_s <= 0 or wire.has_messages(payload) or time.monotonic() >= deadline:
                break
            time.sleep(POLL_STEP_S)
            if _client_gone(environ):
                # A long poll of a client that died (an agent killed meanwhile): receiving
                # for it would hide the message from everyone for a visibility timeout.
                status, headers, payload = "499 Client Closed Request", [], b""
                break
        start_response(status, headers)
        return [payload]

    def _call_locked(
        self, environ: dict[str, Any], body: bytes, operation: str
    ) -> tuple[str, list[Any], bytes]:
        """moto's answer; with durable state, given once its change (and any change it
        may have seen) is in the journal on disk: written under the lock, synced outside."""
        captured: list[Any] = []
        pending = None

        def capture(status: str, headers: list[Any], exc_info: Any = None) -> None:
            captured[:] = [status, headers]

        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(body)
        env["CONTENT_LENGTH"] = str(len(body))
        with self._lock:
            if self.profile is not None:
                self.profile.enable()
            result = self._app(env, capture)
            try:
                payload = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                if self.profile is not None:
                    self.profile.disable()
            status, headers = captured
            if self.state is not None:
                pending = self.state.record(env, body, operation, status, payload)
        if pending is not None:
            DurableState.wait(pending)
        return status, headers, payload

    def _stats(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """GET: request counts per service.operation and the server's CPU seconds (for the
        benchmarks); POST: the same, then the counts start again from zero."""
        times = os.times()
        payload = json.dumps(
            {
                "requests": dict(self.counts),
                "backend_cpu_s": dict(self.busy),
                "cpu_s": times.user + times.system,
            }
        ).encode()
        if environ.get("REQUEST_METHOD") == "POST":
            self.counts.clear()
            self.busy.clear()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [payload]


def _backend_never_waits() -> None:
    """Moto's SQS receive sleeps inside the backend (under our lock) for a long poll; the
    middleware waits instead, outside the lock, so the backend is always asked with 0."""
    from moto.sqs.models import SQSBackend

    backend: Any = SQSBackend
    if getattr(backend, "_clobi_no_wait", False):
        return
    receive = backend.receive_message

    def receive_now(
        self: Any, queue_name: str, count: int, _wait: int, *args: Any, **kw: Any
    ) -> Any:
        return receive(self, queue_name, count, 0, *args, **kw)

    backend.receive_message = receive_now
    backend._clobi_no_wait = True


def _no_write(data: bytes) -> object:
    raise NotImplementedError("the embedded endpoint's app returns its answer; it never writes")


def _client_gone(environ: dict[str, Any]) -> bool:
    """Whether the client hung up: its socket reads as closed. (A live client sends nothing
    while it waits for this answer.)"""
    sock = environ.get("werkzeug.socket")
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def make_app(key: str, secret: str, state: DurableState | None = None) -> SerializedApp:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    speed_up_moto()
    _backend_never_waits()
    backend = DomainDispatcherApplication(create_backend_app)
    return SerializedApp(backend, key_lookup(key, secret), state)


def serve(
    host: str, port: int, ready_file: Path | None, credentials: Path, state_dir: Path | None
) -> None:
    """Run the endpoint in this process until SIGTERM/SIGINT (with `state_dir`: restored
    from it first, and every change kept there). Blocks; raises StateRefused."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Handler(WSGIRequestHandler):
        """Keep-alive. werkzeug's server answers one request per connection (it cannot
        drain a body it did not read, so it closes each connection and reads what is left);
        with boto3 that costs a connect and a server thread per request: measured, about a
        third of an agent's CPU in boto3. Our app reads every body and buffers every answer
        (SerializedApp), so the answer is written here, with its length, and the connection
        serves the client's next request. The 100-continue reply is the stdlib's."""

        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # An answer goes out in two writes (head, body): without this, on a kept-alive
            # connection the body waits for the client's delayed ACK (~40 ms).
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def run_wsgi(self) -> None:
            environ = self.make_environ()
            started: list[Any] = []

            def start_response(
                status: str, headers: list[Any], exc_info: Any = None
            ) -> Callable[[bytes], object]:
                started[:] = [status, headers]
                return _no_write

            try:
                payload = b"".join(self.server.app(environ, start_response))
            except Exception:
                log.exception("endpoint error on %s %s", self.command, self.path)
                started[:] = ["500 Internal Server Error", []]
                payload = b""
            if not environ.get(DRAINED):
                self.close_connection = True  # what is left of the body would be misread
            status, headers = started
            code, _, message = status.partition(" ")
            self.send_response(int(code), message)
            head = self.command == "HEAD"  # its Content-Length is what GET would send
            for key, value in headers:
                if key.lower() not in ("connection", "" if head else "content-length"):
                    self.send_header(key, value)
            if not head:
                self.send_header("Content-Length", str(len(payload)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if not head:
                self.wfile.write(payload)

        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    keys = localkeys.read(credentials)
    if keys is None:
        raise EndpointError(f"no key pair at {credentials}")
    app = make_app(*keys, DurableState(state_dir) if state_dir else None)
    server = make_server(host, port, app, threaded=True, request_handler=Handler)
    url = f"http://{host}:{server.server_port}"
    if app.state is not None:  # bound first: the port is part of what the state holds
        app.state.restore(app._app, server.server_port)

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if ready_file is not None:
        write_private(ready_file, json.dumps({"url": url, "pid": os.getpid()}))
    server.serve_forever()
    if app.state is not None:
        app.state.close()
    if app.profile is not None:
        app.profile.dump_stats(os.environ["CLOBI_ENDPOINT_PROFILE"])


def launch(
    port: int = 0,
    *,
    ready_file: Path,
    log_file: Path,
    credentials: Path,
    detach: bool = True,
    timeout_s: float = 30.0,
    state_dir: Path | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the endpoint in a child process; return it and its URL once it answers
    (restored from `state_dir` and keeping its state there, if given). It verifies every
    request against the key pair in `credentials` (made if missing). Raises EndpointError
    (StateRefused: one line saying why)."""
    if importlib.util.find_spec("moto") is None:
        raise EndpointError(
            "the embedded endpoint needs moto: pip install 'clobi[local]' (AWS itself does not)"
        )
    localkeys.ensure(credentials)
    ready_file.unlink(missing_ok=True)
    private_dir(log_file.parent)
    with append_private(log_file) as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "embedded.server",
                "--port",
                str(port),
                "--ready-file",
                str(ready_file),
                "--credentials",
                str(credentials),
                *(["--state", str(state_dir)] if state_dir else []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=detach,
            env=_server_env(),
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready_file.exists():
            ready = json.loads(ready_file.read_text())
            if "error" in ready:
                ready_file.unlink()
                raise StateRefused(ready["error"])
            return proc, ready["url"]
        if proc.poll() is not None:
            raise EndpointError(f"embedded endpoint exited at start; see {log_file}")
        time.sleep(0.05)
    proc.kill()
    raise EndpointError(f"embedded endpoint did not start within {timeout_s:.0f} s; see {log_file}")


def _server_env() -> dict[str, str]:
    """The user's environment without any AWS credential or profile: the endpoint needs
    none, and a process that holds none can leak none."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_SHARED_CREDENTIALS_FILE"] = env["AWS_CONFIG_FILE"] = os.devnull
    return env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run clobi's embedded AWS endpoint (moto).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--credentials", type=Path, required=True, help="its key pair")
    parser.add_argument("--state", type=Path, help="keep the state here (default: memory)")
    args = parser.parse_args(argv)
    try:
        serve(args.host, args.port, args.ready_file, args.credentials, args.state)
    except StateRefused as refused:  # one line, for whoever started it
        if args.ready_file is not None:
            write_private(args.ready_file, json.dumps({"error": str(refused)}))
        sys.exit(f"clobi endpoint: {refused}")


if __name__ == "__main__":
    main()
