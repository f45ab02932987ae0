"""A drained agent on EC2 cannot shut the machine down itself (the unit runs it unprivileged,
with no-new-privs): it leaves a mark and exits, and the unit's stop hook, which runs with full
privileges, powers off. The hook is run here as systemd runs it, with `systemctl` recorded."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from job_agent.cli import POWER_OFF

UNIT = Path(__file__).parents[2] / "job_agent" / "clobi-agent.service"


def _hook(workdir: Path) -> list[str]:
    """The unit's ExecStopPost command line, its state folder moved to `workdir`."""
    line = next(x for x in UNIT.read_text().splitlines() if x.startswith("ExecStopPost="))
    command = line.split("=", 1)[1]
    assert command.startswith("+"), "the hook needs full privileges: the agent has none"
    assert "/var/lib/clobi/" + POWER_OFF in command
    return [
        "/bin/sh",
        "-c",
        command[1:].split("'", 1)[1].rsplit("'", 1)[0].replace("/var/lib/clobi", str(workdir)),
    ]


def _run_hook(tmp_path: Path, result: str) -> list[str]:
    """Run the hook with SERVICE_RESULT=`result`; the systemctl calls it made."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    fake = bin_dir / "systemctl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin", SERVICE_RESULT=result)
    subprocess.run(_hook(tmp_path), env=env, check=True, timeout=10)
    return calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.parametrize(
    ("marked", "result", "expected"),
    [
        (True, "success", ["poweroff --no-block"]),  # drained: the VM goes
        (False, "success", []),  # stopped from outside (its jobs retried): the VM stays
        (True, "exit-code", []),  # crashed: systemd restarts it
    ],
)
def test_the_units_stop_hook_powers_off_only_a_drained_agent(
    tmp_path: Path, marked: bool, result: str, expected: list[str]
) -> None:
    if marked:
        (tmp_path / POWER_OFF).write_text("drained\n")
    assert _run_hook(tmp_path, result) == expected
    assert not (tmp_path / POWER_OFF).exists() or result != "success"
