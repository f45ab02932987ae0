"""The console: command parsing and views without urwid, and the real TUI in tmux."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from resource_manager.console import views
from resource_manager.console.commands import (
    Autoscale,
    Drain,
    Help,
    Kill,
    ParseError,
    Quit,
    SetMax,
    Start,
    complete,
    parse,
)
from resource_manager.console.state import ConsoleState
from resource_manager.lifecycle import cleanup_session
from resource_manager.monitor import PoolSnapshot
from resource_manager.pool import Pool
from shared.models import LocalCloud
from shared.records import JobState, VmRecord, VmState
from shared.session import Session
from tests.helpers import TmuxConsole, cli, requires_tool, wait_until


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("start local", Start("local", 1)),
        ("start aws 5", Start("aws", 5)),
        ("start aws 5 over-budget", Start("aws", 5, over_budget=True)),
        ("drain vm-a vm-b", Drain(("vm-a", "vm-b"))),
        ("kill vm-a", Kill(("vm-a",))),
        ("autoscale on", Autoscale(True)),
        ("max aws 0", SetMax("aws", 0)),
        ("help", Help()),
        ("?", Help()),
        ("quit", Quit()),
    ],
)
def test_commands_parse(text: str, command: object) -> None:
    assert parse(text) == command


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "type a command"),
        ("launch local", "unknown command 'launch'"),
        ("start", "usage: start CLOUD"),
        ("start local many", "'many' is not a number"),
        ("start local 0", "too small"),
        ("autoscale maybe", "usage: autoscale on|off"),
        ("drain", "usage: drain VM"),
    ],
)
def test_bad_commands_say_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse(text)


def test_completion_extends_verbs_clouds_and_vms() -> None:
    assert complete("dr", ["local"], []) == "drain "
    assert complete("start lo", ["local", "aws"], []) == "start local "
    assert complete("kill vm-local-a", [], ["vm-local-ab1", "vm-local-ab2"]) == "kill vm-local-ab"
    assert complete("zz", [], []) == "zz"


def test_views_render_the_pool_from_a_state_object() -> None:
    now = datetime(2026, 11, 22, tzinfo=UTC)
    vm = VmRecord(
        id="vm-local-1",
        cloud="local",
        state=VmState.RUNNING,
        cores=2,
        running_jobs=("a.0",),
        last_heartbeat_at=now - timedelta(seconds=4),
    )
    state = ConsoleState(
        "s-1",
        PoolSnapshot(
            vms=[vm], jobs=Counter({"queued": 7}), queue_depths={"p1": 3, "p2": 0, "dlq": 1}
        ),
    )
    cloud = LocalCloud(name="local", driver="local", cores_per_vm=2, max_vms=4, cost_per_hour=0.5)
    assert views.clouds_lines(state, (cloud,), {})[1].split() == [
        "local",
        "0",
        "1",
        "0",
        "2",
        "4",
        "0.50",
    ]
    assert views.clouds_lines(state, (cloud,), {"local": 9})[1].split()[5] == "9"
    assert views.vms_lines(state, now)[1].split() == ["vm-local-1", "local", "running", "1", "4s"]
    assert [line.split() for line in views.queues_lines(state)[1:]] == [
        ["p2", "0", "0"],
        ["p1", "3", "0"],
        ["dlq", "1", "0"],
    ]
    assert "queued          7" in views.jobs_lines(state)
    assert "autoscale off" in views.header(state)
    assert views.recent_lines(state, 2) == ["(none yet)", ""]
    state.recent.extend(["t1 a.0 started on vm-1", "t2 a.0 succeeded (exit 0) on vm-1"])
    assert views.recent_lines(state, 2)[1] == "t2 a.0 succeeded (exit 0) on vm-1"


def _screen(name: str) -> str:
    return subprocess.run(
        ["tmux", "capture-pane", "-t", name, "-p"], capture_output=True, text=True, check=False
    ).stdout


@requires_tool("tmux")
def test_the_console_in_a_terminal_starts_vms_runs_jobs_drains_and_quits(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    name = f"clobi-{os.getpid()}"
    out = tmp_path / "after.txt"
    command = (
        f"{sys.executable} -m clobi rm --interval 0.5 --session {session.id}; echo exit=$? > {out}"
    )
    subprocess.run(
        [
            "tmux",
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "100",
            "-y",
            "30",
            "-e",
            f"CLOBI_HOME={os.environ['CLOBI_HOME']}",
            command,
        ],
        check=True,
    )
    try:
        wait_until(lambda: "clobi rm  session" in _screen(name), timeout=20, what="the console")
        began = time.monotonic()
        subprocess.run(["tmux", "send-keys", "-t", name, "start local 2", "Enter"], check=True)
        wait_until(
            lambda: "started vm-local-" in _screen(name), timeout=10, what="the start to be logged"
        )
        wait_until(
            lambda: _screen(name).count(" running ") >= 2,
            timeout=30,
            what="two running VMs on screen",
        )
        assert time.monotonic() - began < 30
        script = tmp_path / "job.sh"
        script.write_text("sleep 2\n")
        JobClient(session).submit(JobSpec(script=str(script), count=4))
        wait_until(
            lambda: "succeeded       4" in _screen(name),
            timeout=60,
            what="four succeeded jobs on screen",
        )
        wait_until(
            lambda: "succeeded vm-local-" in _screen(name),
            timeout=10,
            what="recent transitions in their pane",
        )
        began = time.monotonic()
        subprocess.run(["tmux", "send-keys", "-t", name, "?"], check=True)
        wait_until(
            lambda: "soft kill: finish jobs" in _screen(name), timeout=5, interval=0.01, what="help"
        )
        print(f"key to screen: {1000 * (time.monotonic() - began):.0f} ms (tmux polling included)")
        vm = sorted(v.id for v in session.vms.all())[0]
        subprocess.run(["tmux", "send-keys", "-t", name, "d", vm, "Enter"], check=True)
        wait_until(lambda: f"draining {vm}" in _screen(name), timeout=10, what="the drain")
        wait_until(
            lambda: session.vms.get(vm).state is VmState.STOPPED,  # type: ignore[union-attr]
            timeout=30,
            what="the drained VM to stop",
        )
        subprocess.run(["tmux", "send-keys", "-t", name, "q"], check=True)
        wait_until(out.exists, timeout=10, what="the console to quit")
        assert out.read_text().strip() == "exit=0"
        assert JobClient(session).status()[0].state is JobState.SUCCEEDED
        live = [v for v in session.vms.all() if v.state is VmState.RUNNING]
        assert len(live) == 1, "quitting leaves the session and its VMs running"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, check=False)


@requires_tool("tmux")
def test_a_hanging_cloud_call_is_reported_and_keys_still_answer(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    import socket

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)  # accepts connections and never answers
    from shared.models import Ec2Cloud

    stuck = Ec2Cloud(
        name="stuck",
        driver="ec2",
        ami="ami-1",
        endpoint_url=f"http://127.0.0.1:{hole.getsockname()[1]}",
    )
    session = make_session(clouds=(LocalCloud(name="local", driver="local"), stuck))
    name = f"clobi-hang-{os.getpid()}"
    subprocess.run(
        [
            "tmux",
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "100",
            "-y",
            "30",
            "-e",
            f"CLOBI_HOME={os.environ['CLOBI_HOME']}",
            f"{sys.executable} -m clobi rm --interval 0.5 --session {session.id}",
        ],
        check=True,
    )
    try:
        wait_until(lambda: "clobi rm  session" in _screen(name), timeout=20, what="the console")
        subprocess.run(["tmux", "send-keys", "-t", name, "start stuck 1", "Enter"], check=True)
        wait_until(
            lambda: "a call is taking" in _screen(name),
            timeout=20,
            what="the slow call in the log pane",
        )
        began = time.monotonic()
        subprocess.run(["tmux", "send-keys", "-t", name, "?"], check=True)
        wait_until(
            lambda: "soft kill: finish jobs" in _screen(name),
            timeout=5,
            interval=0.01,
            what="the help to answer while the call hangs",
        )
        answered_ms = 1000 * (time.monotonic() - began)
        print(f"key to screen while a cloud call hangs: {answered_ms:.0f} ms")
        assert answered_ms < 1000
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, check=False)
        hole.close()


@requires_tool("tmux")
def test_the_consoles_job_counts_equal_clobi_status(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    Pool(session).start("local", 2)
    script = tmp_path / "job.sh"
    script.write_text("sleep 1000\n")
    client = JobClient(session)
    client.submit(JobSpec(script=str(script), count=5))  # 4 run on 2 x 2 cores, 1 waits
    wait_until(
        lambda: sum(r.state is JobState.RUNNING for r in client.status()) == 4,
        timeout=30,
        what="four running jobs",
    )
    status = cli("status", "--json", "--session", session.id)
    counts = Counter(row["state"] for row in status.json())
    assert (counts["running"], counts["queued"]) == (4, 1), counts
    console = TmuxConsole(session.id)
    try:
        expected = [f"{state!s:<10} {counts.get(str(state), 0):>6}" for state in JobState]
        wait_until(
            lambda: all(line in console.screen() for line in expected),
            timeout=15,
            what=f"the console to show {expected}",
        )
    finally:
        console.close()


@requires_tool("tmux")
def test_the_console_stops_with_one_line_when_the_session_is_gone(
    make_session: Callable[..., Session],
) -> None:
    session = make_session()
    console = TmuxConsole(session.id)
    try:
        cleanup_session(session.info)
        line = f"clobi: error: session {session.id} no longer exists on its endpoint"
        screen = wait_until(
            lambda: line in console.screen() and console.screen(), timeout=20, what=line
        )
        assert "Traceback" not in screen and "monitor:" not in screen, screen
    finally:
        console.close()
