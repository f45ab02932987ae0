"""The commands of sessions and of the embedded endpoint: `clobi session`, `clobi local`."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from embedded import daemon as endpoint
from resource_manager.drivers.local import session_root
from resource_manager.iam_policies import NAMES, account_of, filled
from resource_manager.lifecycle import cleanup_session, create_session
from resource_manager.pool import Pool
from resource_manager.template import write_template
from shared import sessionfile
from shared.cli import Progress, add_json, add_session, port, print_json, print_table
from shared.config import load_session_config
from shared.errors import ClobiError
from shared.session import Session, exists
from shared.timeutil import iso


def register(commands: Any) -> None:
    _register_local(commands)
    _register_session(commands)


def _register_local(commands: Any) -> None:
    local = commands.add_parser(
        "local",
        help="the embedded AWS endpoint (moto server on 127.0.0.1)",
        description="Run the embedded AWS endpoint as a daemon of this machine. Sessions whose "
        'config says endpoint_url = "local" use it. Its state (sessions, jobs, results) is kept '
        "in $CLOBI_HOME/local/state/ and survives a stop, a crash or a reboot.",
    )
    sub = local.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = sub.add_parser(
        "up",
        help="start it (idempotent), restoring its state; prints its URL as the last line",
    )
    up.add_argument(
        "--port",
        type=port,
        default=None,
        help="port on 127.0.0.1 (default: the one its state was served on, which its "
        f"sessions know, else {endpoint.DEFAULT_PORT}; 0 = any free)",
    )
    up.set_defaults(func=_local_up)
    down = sub.add_parser("down", help="stop it; its state is kept for the next `up`")
    down.set_defaults(func=_local_down)
    status = sub.add_parser(
        "status", help="whether it runs, where, and its state's size and last snapshot's age"
    )
    add_json(status)
    status.set_defaults(func=_local_status)


def _local_up(args: argparse.Namespace) -> int:
    print(endpoint.up(args.port))
    return 0


def _local_down(args: argparse.Namespace) -> int:
    stopped = endpoint.down()
    print("embedded endpoint stopped" if stopped else "embedded endpoint was not running")
    return 0


def _local_status(args: argparse.Namespace) -> int:
    state = endpoint.status()
    kept = state.state
    if args.json:
        print_json(
            {
                "running": state.running,
                "url": state.url,
                "pid": state.pid,
                "state": {
                    "path": kept.path,
                    "bytes": kept.bytes,
                    "snapshot_age_s": kept.snapshot_age_s,
                },
            }
        )
    else:
        print(f"running at {state.url} (pid {state.pid})" if state.running else "not running")
        age = kept.snapshot_age_s
        snap = "no snapshot yet" if age is None else f"last snapshot {age:.0f} s ago"
        print(f"state: {kept.bytes / 1024**2:.1f} MiB in {kept.path}, {snap}")
    return 0 if state.running else 1


def _register_session(commands: Any) -> None:
    session = commands.add_parser("session", help="create, inspect and clean up sessions")
    sub = session.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = sub.add_parser("init", help="write a commented session config and sample jobs")
    init.add_argument("dir", nargs="?", default=".", type=Path, help="where (default: here)")
    init.set_defaults(func=_session_init)
    create = sub.add_parser(
        "create",
        help="create queues, tables and the S3 prefix; prints the session id as the last line",
    )
    create.add_argument("config", type=Path, help="session config (TOML)")
    create.add_argument(
        "--print-policies",
        action="store_true",
        help="also print the session's IAM policies, filled in, as JSON (before the id)",
    )
    create.set_defaults(func=_session_create)
    policies = sub.add_parser(
        "policies",
        help="the IAM policies of a session, filled in (agent, resource-manager, submitter, "
        "bucket) as JSON",
        description="Print the least-privilege IAM policies for a session as one JSON object: "
        "the agent's instance profile and the submitter reach only this session's queues, "
        "tables and S3 prefix. The account id is read from STS.",
    )
    policies.add_argument("name", nargs="?", choices=NAMES, help="only this policy")
    add_session(policies)
    policies.set_defaults(func=_session_policies)
    listing = sub.add_parser("list", help="the sessions of this machine")
    add_json(listing)
    listing.set_defaults(func=_session_list)
    show = sub.add_parser("show", help="one session's resources and settings")
    add_session(show)
    add_json(show)
    show.set_defaults(func=_session_show)
    cleanup = sub.add_parser(
        "cleanup",
        help="terminate the VMs, delete queues, tables and "
        "S3 objects of a session (fetch results first)",
    )
    add_session(cleanup)
    cleanup.add_argument("--yes", action="store_true", help="do it without asking")
    cleanup.set_defaults(func=_session_cleanup)


def _session_init(args: argparse.Namespace) -> int:
    for path in write_template(args.dir):
        print(path)
    return 0


def _session_create(args: argparse.Namespace) -> int:
    config = load_session_config(args.config)
    progress = Progress()
    info = create_session(config, report=progress.line)
    print(f"session file {sessionfile.path_for(info.id)}", file=sys.stderr)
    if args.print_policies:
        print_json(filled(info, account_of(Session(info).aws)))
    print(info.id)
    return 0


def _session_policies(args: argparse.Namespace) -> int:
    info = sessionfile.resolve(args.session)
    policies = filled(info, account_of(Session(info).aws))
    print_json(policies[args.name] if args.name else policies)
    return 0


def _session_list(args: argparse.Namespace) -> int:
    infos = sessionfile.all_sessions()
    found = {False: "gone", True: "live", None: "unreachable"}
    rows = [
        {
            "id": i.id,
            "created_at": iso(i.created_at),
            "endpoint": i.endpoint_url or "aws",
            "region": i.region,
            "state": found[exists(i)],  # gone: `clobi session cleanup` forgets it
        }
        for i in infos
    ]
    if args.json:
        print_json(rows)
    elif rows:
        headers = ["id", "created_at", "endpoint", "region", "state"]
        print_table(headers, [list(r.values()) for r in rows])
    else:
        print("no sessions", file=sys.stderr)
    return 0


def _session_show(args: argparse.Namespace) -> int:
    info = sessionfile.resolve(args.session)
    if args.json:
        print_json(info.model_dump(mode="json"))
        return 0
    print(
        f"session   {info.id}\ncreated   {iso(info.created_at)}\n"
        f"endpoint  {info.endpoint_url or 'AWS'} ({info.region})\n"
        f"s3        s3://{info.bucket}/{info.prefix}"
    )
    for name, url in sorted(info.queue_urls.items()):
        print(f"queue     {name}: {url}")
    for kind, table in info.tables.items():
        print(f"table     {kind}: {table}")
    for cloud in info.config.clouds:
        print(
            f"cloud     {cloud.name} ({cloud.driver}): {cloud.cores_per_vm} cores/VM, "
            f"max {cloud.max_vms} VMs"
        )
    for release in sorted(info.config.releases):
        print(f"release   {release}")
    return 0


def _session_cleanup(args: argparse.Namespace) -> int:
    info = sessionfile.resolve(args.session)
    if not args.yes:
        if not sys.stdin.isatty():
            raise ClobiError(f"cleanup deletes session {info.id} for good: add --yes")
        answer = input(f"Delete session {info.id}, its VMs, queues, tables and S3 objects? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted", file=sys.stderr)
            return 1
    pool = Pool(Session(info))
    terminated = pool.terminate_all()
    swept = pool.sweep()
    removed = cleanup_session(info)
    shutil.rmtree(session_root(info.id), ignore_errors=True)
    volumes = f", {swept} release volumes" if swept else ""
    print(
        f"session {info.id} cleaned up: {terminated} VMs terminated, {removed['queues']} "
        f"queues, {removed['tables']} tables, {removed['objects']} S3 objects{volumes} deleted"
    )
    return 0
