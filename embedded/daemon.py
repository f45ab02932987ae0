"""The embedded endpoint as a daemon of this machine: `clobi local up|down|status`. Its state
is kept under `$CLOBI_HOME/local/state/` (see embedded/state.py) and restored by `up`."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedded import server
from embedded.auth import sign
from embedded.state import StateInfo, last_port
from embedded.state import info as state_info
from shared import localkeys, sessionfile
from shared.dispatch import resend_sent
from shared.errors import ClobiError, EndpointError
from shared.home import local_dir
from shared.models import SessionInfo
from shared.session import Session, exists

LOCAL = "local"
DEFAULT_PORT = 4566
PORT_WAIT_S = 10.0
RESTORE_TIMEOUT_S = 300.0  # a large state takes a while to read back


@dataclass(frozen=True)
class EndpointStatus:
    running: bool
    url: str | None
    pid: int | None
    state: StateInfo


def state_dir() -> Path:
    return local_dir() / "state"


def _state_file() -> Path:
    return local_dir() / "endpoint.json"


def _log_file() -> Path:
    return local_dir() / "endpoint.log"


def status() -> EndpointStatus:
    """Whether the embedded endpoint of this CLOBI_HOME is up. Never raises."""
    try:
        state = json.loads(_state_file().read_text())
        pid, url = int(state["pid"]), str(state["url"])
    except (OSError, ValueError, KeyError):
        return EndpointStatus(False, None, None, state_info(state_dir()))
    running = is_alive(pid) and _answers(url)
    return EndpointStatus(running, url, pid, state_info(state_dir()))


def up(port: int | None = None, *, default_port: int = DEFAULT_PORT) -> str:
    """Start the endpoint unless it runs already (idempotent); return its URL. It restores
    the state it keeps, on the port that state was last served on (the URL its sessions
    know) unless `port` says otherwise, else on `default_port`; then the jobs whose
    messages were out are sent again (messages are not kept). Raises EndpointError."""
    current = status()
    if current.running and current.url:
        return current.url
    if port is None:
        port = last_port(state_dir()) or default_port
    if port and current.pid is not None:  # it crashed: its port is free a moment later
        deadline = time.monotonic() + PORT_WAIT_S
        while _taken(port) and time.monotonic() < deadline:
            time.sleep(0.1)
    if port and _taken(port):
        raise EndpointError(
            f"port {port} on 127.0.0.1 is taken by another program; "
            "`clobi local up --port N` picks another (0: any free port)"
        )
    _, url = server.launch(
        port,
        ready_file=_state_file(),
        log_file=_log_file(),
        credentials=localkeys.default_path(),
        detach=True,
        timeout_s=RESTORE_TIMEOUT_S,
        state_dir=state_dir(),
    )
    for info in live_sessions(url):
        resend_sent(Session(info))
    return url


def down(timeout_s: float = 30.0) -> bool:
    """Stop the endpoint; True if one was running. Its state stays on disk for the next
    `up` (a stop that takes longer than `timeout_s` is a kill: nothing acknowledged is lost)."""
    current = status()
    if current.pid is None or not is_alive(current.pid):
        _state_file().unlink(missing_ok=True)
        return False
    os.kill(current.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while is_alive(current.pid):
        if time.monotonic() > deadline:
            os.kill(current.pid, signal.SIGKILL)
        time.sleep(0.05)
    _state_file().unlink(missing_ok=True)
    return True


def live_sessions(url: str | None) -> list[SessionInfo]:
    """The sessions of this machine that live on the endpoint at `url` (their jobs table is
    there)."""
    return [
        info for info in sessionfile.all_sessions() if info.endpoint_url == url and exists(info)
    ]


def resolve(endpoint_url: str | None, *, start: bool = False) -> str | None:
    """Map the config value "local" to the embedded endpoint's URL (starting it if asked)."""
    if endpoint_url != LOCAL:
        return endpoint_url
    current = status()
    if current.running:
        return current.url
    if start:
        return up(default_port=0)
    raise EndpointError("the embedded endpoint is not running; start it with `clobi local up`")


def _taken(port: int) -> bool:
    with socket.socket() as probe:
        # As the server binds: a port whose old connections linger (TIME_WAIT) is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def is_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def _answers(url: str) -> bool:
    """Whether the endpoint at `url` answers a request signed with this machine's key."""
    try:
        return stats(url) is not None
    except (OSError, ClobiError):
        return False


def stats(url: str, *, reset: bool = False) -> dict[str, Any]:
    """The endpoint's request counts and CPU time (POST: then zeroed), signed with the key
    of this CLOBI_HOME. Raises OSError, EndpointError."""
    keys = localkeys.read(localkeys.default_path())
    if keys is None:
        raise EndpointError(f"no key for the embedded endpoint at {localkeys.default_path()}")
    return dict(signed_request(url, server.STATS_PATH, keys, "POST" if reset else "GET"))


def signed_request(
    url: str, path: str, keys: tuple[str, str], method: str = "GET", body: bytes = b""
) -> Any:
    """A request to the endpoint's own pages (stats, moto's API), signed; its JSON answer."""
    target = f"{url}{path}"
    headers = sign(method, target, *keys, body=body)
    headers["Content-Type"] = "text/plain"  # urllib's form default would hide a body from moto
    request = urllib.request.Request(target, data=body or None, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
    return json.loads(text) if text.strip().startswith((b"{", b"[")) else text
