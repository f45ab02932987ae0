"""The command line as a new user meets it: help on everything, defaults said, --version,
--debug wherever it is typed."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path

from clobi.cli import parser
from shared.records import JobStatus
from shared.session import Session
from tests.helpers import cli


def _options(
    node: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.Action]]:
    for action in node._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield path, action


def test_every_argument_has_help_and_states_its_default() -> None:
    missing = []
    for path, action in _options(parser()):
        label = f"clobi {' '.join(path)} {'/'.join(action.option_strings) or action.dest}"
        default = action.default
        if not action.help:
            missing.append(f"{label}: no help")
        elif action.option_strings and default not in (None, False, [], argparse.SUPPRESS):
            said = "default" in action.help
            missing += [] if said else [f"{label}: its default {default!r} is not said"]
    assert missing == []
    assert len(list(_options(parser()))) > 60  # the walk reaches the subcommands


def test_version_and_debug_after_the_command() -> None:
    version = cli("--version")
    assert version.code == 0 and version.out.startswith("clobi ")
    late = cli("status", "--session", "nope", "--debug")
    assert late.code == 1 and "Traceback" in late.err and "no session 'nope'" in late.err


def test_local_up_on_a_taken_port_says_so_and_how_to_pick_another() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = cli("local", "up", "--port", port)
    assert result.code == 1 and result.err.count("\n") == 1
    assert f"port {port}" in result.err and "--port" in result.err


def test_status_json_carries_every_field_and_drain_names_an_unknown_vm(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session()
    script = tmp_path / "a.sh"
    script.write_text("true\n")
    sid = ("--session", session.id)
    assert cli("submit", "--script", str(script), *sid).code == 0
    (row,) = cli("status", "--json", *sid).json()
    assert set(row) == set(JobStatus.model_fields)
    drain = cli("vm", "drain", "vm-local-nope", *sid)
    assert drain.code == 1 and "no such VM" in drain.err and "vm-local-nope" in drain.err
    # And `wait` on jobs nobody will run says why, once, instead of waiting silently.
    waited = cli("wait", "--timeout", "1", *sid)
    assert waited.code == 3 and waited.err.count("no VM is running") == 1, waited.err
