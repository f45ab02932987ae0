"""Test helpers: polling with a deadline instead of sleeping, and the CLI in-process."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from clobi.cli import main

T = TypeVar("T")


def requires_tool(name: str) -> pytest.MarkDecorator:
    """Skip without the program `name`, except in CI (.ci/run installs it and sets
    CLOBI_REQUIRE_TOOLS), where its absence fails the test instead of hiding it."""
    return pytest.mark.skipif(
        shutil.which(name) is None and not os.environ.get("CLOBI_REQUIRE_TOOLS"),
        reason=f"needs {name} (.ci/run installs it)",
    )


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll until `predicate()` is truthy; return its value, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def cli(*args: str) -> Result:
    """Run the clobi CLI in this process, as a user would type it."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


def clobi_process(*args: str) -> subprocess.Popen[str]:
    """Start the clobi CLI as a real process (with this test's CLOBI_HOME)."""
    return subprocess.Popen(
        [sys.executable, "-m", "clobi", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def stop_process(proc: subprocess.Popen[str], timeout: float = 15.0) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


class TmuxConsole:
    """`clobi rm` (the console) in a detached tmux terminal: type into it, read its screen."""

    def __init__(self, session_id: str, width: int = 100, height: int = 30) -> None:
        self.name = f"clobi-{os.getpid()}-{time.monotonic_ns()}"
        command = f"{sys.executable} -m clobi rm --interval 0.5 --session {session_id}"
        size = ["-x", str(width), "-y", str(height)]
        home = f"CLOBI_HOME={os.environ['CLOBI_HOME']}"
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.name, *size, "-e", home, command], check=True
        )
        # A console that stops by itself leaves its last words on the screen.
        subprocess.run(["tmux", "set-option", "-t", self.name, "remain-on-exit", "on"], check=True)
        wait_until(lambda: "clobi rm  session" in self.screen(), timeout=20, what="the console")

    def screen(self) -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-t", self.name, "-p"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout

    def type(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True, check=False)


def tar_archive(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    """A gzipped tar of these members, crafted at will (see `tar_member`)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def tar_member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", **attrs: Any
) -> tuple[tarfile.TarInfo, bytes | None]:
    """One member of any kind, with any TarInfo attributes (mode, linkname, size...)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data if kind == tarfile.REGTYPE else None


def session_from_cli(tmp_path: Path, config: str) -> str:
    """`clobi session create` of a config written from `config`, as a user runs it: the id."""
    path = tmp_path / "session.toml"
    path.write_text(config)
    created = cli("session", "create", str(path))
    assert created.code == 0, created.err
    return created.out.split()[-1]
