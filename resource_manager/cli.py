"""The Resource Manager's commands: `clobi local`, `clobi session`, `clobi vm`."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from embedded import daemon as endpoint
from resource_manager.autoscaler import SETTING, autoscale_enabled
from resource_manager.drivers.local import session_root
from resource_manager.headless import run_headless, step_interval_s
from resource_manager.lifecycle import cleanup_session, create_session
from resource_manager.policies import NAMES, account_of, filled
from resource_manager.pool import Pool
from resource_manager.simulate import POLICIES, read_trace, simulate
from resource_manager.template import write_template
from shared import sessionfile
from shared.cli import (
    Progress,
    add_json,
    add_session,
    interval,
    port,
    print_json,
    print_table,
)
from shared.config import load_session_config
from shared.errors import ClobiError
from shared.events import SESSION_KEY
from shared.session import Session, exists
from shared.timeutil import iso


def register(commands: Any) -> None:
    _register_local(commands)
    _register_session(commands)
    _register_vm(commands)
    _register_rm(commands)
    _register_autoscale(commands)


def _register_rm(commands: Any) -> None:
    rm = commands.add_parser(
        "rm",
        help="the Resource Manager: urwid console, or a headless loop that logs",
        description="Run the Resource Manager of a session: watch VMs and queues, reap jobs "
        "whose lease expired, re-send lost messages. Quitting leaves the session "
        "and its VMs running.",
    )
    rm.add_argument("--headless", action="store_true", help="no screen: log to stderr")
    rm.add_argument(
        "--interval",
        type=interval,
        metavar="SECONDS",
        help="seconds between monitor steps (default: a quarter lease, at most 10)",
    )
    add_session(rm)
    rm.set_defaults(func=_rm)


def _rm(args: argparse.Namespace) -> int:
    os.environ["AWS_SDK_UA_APP_ID"] = "clobi-rm"  # in every request's User-Agent
    pool = _pool(args)
    if args.headless:
        return run_headless(pool, args.interval)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise ClobiError("the console needs a terminal; use `clobi rm --headless`")
    from resource_manager.console.app import Console

    Console(pool, args.interval or step_interval_s(pool.session.info.config.lease_s)).run()
    print(
        f"console closed: session {pool.session.id} and its VMs keep running "
        f"(`clobi rm` shows them again, `clobi session cleanup` ends them)"
    )
    return 0


def _register_local(commands: Any) -> None:
    local = commands.add_parser(
        "local",
        help="the embedded AWS endpoint (moto server on 127.0.0.1)",
        description="Run the embedded AWS endpoint as a daemon of this machine. Sessions whose "
        'config says endpoint_url = "local" use it.',
    )
    sub = local.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = sub.add_parser("up", help="start it (idempotent); prints its URL as the last line")
    up.add_argument(
        "--port",
        type=port,
        default=endpoint.DEFAULT_PORT,
        help=f"port on 127.0.0.1 (default {endpoint.DEFAULT_PORT}; 0 = any free)",
    )
    up.set_defaults(func=_local_up)
    down = sub.add_parser(
        "down", help="stop it; refused while sessions live on it (their state would be lost)"
    )
    down.add_argument(
        "--force", action="store_true", help="stop it even so: every session on it is lost"
    )
    down.set_defaults(func=_local_down)
    status = sub.add_parser("status", help="say whether it runs, and where")
    add_json(status)
    status.set_defaults(func=_local_status)


def _local_up(args: argparse.Namespace) -> int:
    print(endpoint.up(args.port))
    return 0


def _local_down(args: argparse.Namespace) -> int:
    stopped = endpoint.down(force=args.force)
    print("embedded endpoint stopped" if stopped else "embedded endpoint was not running")
    return 0


def _local_status(args: argparse.Namespace) -> int:
    state = endpoint.status()
    if args.json:
        print_json({"running": state.running, "url": state.url, "pid": state.pid})
    else:
        print(f"running at {state.url} (pid {state.pid})" if state.running else "not running")
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


def _register_vm(commands: Any) -> None:
    vm = commands.add_parser("vm", help="start, list, drain and kill the session's VMs")
    sub = vm.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = sub.add_parser("start", help="start VMs in a configured cloud")
    start.add_argument("cloud", help="a cloud name from the session config")
    start.add_argument("-n", "--count", type=int, default=1, help="how many (default 1)")
    start.add_argument(
        "--over-budget",
        action="store_true",
        help="start them even past the session's budget_per_hour (default: refuse)",
    )
    add_session(start)
    add_json(start)
    start.set_defaults(func=_vm_start)
    listing = sub.add_parser("list", help="the session's VMs")
    add_session(listing)
    add_json(listing)
    listing.set_defaults(func=_vm_list)
    drain = sub.add_parser(
        "drain", help="soft kill: finish running jobs, take no new ones, then power off"
    )
    drain.add_argument("vms", nargs="+", metavar="VM", help="VM ids (see `clobi vm list`)")
    add_session(drain)
    drain.set_defaults(func=_vm_drain)
    kill = sub.add_parser("kill", help="hard kill: terminate now; their jobs are retried")
    kill.add_argument("vms", nargs="+", metavar="VM", help="VM ids (see `clobi vm list`)")
    add_session(kill)
    kill.set_defaults(func=_vm_kill)


def _pool(args: argparse.Namespace) -> Pool:
    return Pool(Session(sessionfile.resolve(args.session)))


def _vm_start(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise ClobiError("--count must be at least 1")
    ids = _pool(args).start(args.cloud, args.count, over_budget=args.over_budget)
    if args.json:
        print_json(ids)
    else:
        print("\n".join(ids))
    return 0


def _vm_list(args: argparse.Namespace) -> int:
    rows = [vm.public() for vm in _pool(args).vms()]
    if args.json:
        print_json(rows)
    else:
        print_table(
            ["id", "cloud", "state", "cores", "jobs", "started", "heartbeat"],
            [
                [
                    r["id"],
                    r["cloud"],
                    r["state"],
                    r["cores"],
                    r["running_jobs"],
                    r["started_at"],
                    r["last_heartbeat_at"],
                ]
                for r in rows
            ],
        )
    return 0


def _vm_drain(args: argparse.Namespace) -> int:
    pool = _pool(args)
    known = {vm.id for vm in pool.vms()}
    unknown = [vm_id for vm_id in args.vms if vm_id not in known]
    if unknown:
        raise ClobiError(f"no such VM in this session: {', '.join(unknown)} (see `clobi vm list`)")
    drained = pool.drain(args.vms)
    for vm_id in args.vms:
        print(f"{vm_id}: {'draining' if vm_id in drained else 'not running'}")
    return 0 if len(drained) == len(args.vms) else 1


def _vm_kill(args: argparse.Namespace) -> int:
    for vm_id in _pool(args).kill(args.vms):
        print(f"{vm_id}: terminated")
    return 0


def _register_autoscale(commands: Any) -> None:
    autoscale = commands.add_parser(
        "autoscale",
        help="the elastic pool policy of the session",
        description="Switch the autoscaler of a session on or off (the Resource Manager "
        "applies it), or show its policy and recent decisions.",
    )
    autoscale.add_argument(
        "action", choices=["on", "off", "status"], help="switch it on or off, or show it"
    )
    add_session(autoscale)
    add_json(autoscale)
    autoscale.set_defaults(func=_autoscale)
    simulate_parser = commands.add_parser(
        "simulate",
        help="the autoscaling policy on a job trace, simulated clock",
        description="Run the autoscaling policy of a session config against a job trace "
        "(CSV: arrival_s,runtime_s,cores,priority) on a simulated clock, with no AWS; report "
        "makespan, waits, VM-hours, cost and idle VM-hours, beside two naive baselines.",
    )
    simulate_parser.add_argument(
        "--trace", type=Path, required=True, metavar="CSV", help="the jobs: see examples/traces/"
    )
    simulate_parser.add_argument(
        "--config", type=Path, required=True, metavar="CONFIG", help="a session config's TOML"
    )
    simulate_parser.add_argument(
        "--policy",
        choices=["clobi", "fixed", "per-job", "all"],
        default="all",
        help="which policy (default: clobi and both baselines)",
    )
    add_json(simulate_parser)
    simulate_parser.set_defaults(func=_simulate)


def _autoscale(args: argparse.Namespace) -> int:
    pool = _pool(args)
    if args.action in ("on", "off"):
        pool.session.vms.set_setting(SETTING, args.action == "on")
        pool.session.events.append(SESSION_KEY, "autoscale", detail=f"switched {args.action}")
    config = pool.session.info.config.autoscale
    recent = [e for e in pool.session.events.for_job(SESSION_KEY) if e.kind == "autoscale"]
    status = {
        "enabled": autoscale_enabled(pool),
        **config.model_dump(exclude={"enabled"}),
        "recent": [e.public() for e in recent[-10:]],
    }
    if args.json:
        print_json(status)
        return 0
    print(
        f"autoscale {'on' if status['enabled'] else 'off'}: idle_timeout_s="
        f"{config.idle_timeout_s:g}, max_launches_per_min={config.max_launches_per_min}, "
        f"budget_per_hour={config.budget_per_hour}, max_vm_lifetime_s={config.max_vm_lifetime_s}"
    )
    for event in recent[-10:]:
        print(f"  {event.public()['at']}  {event.detail}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    config = load_session_config(args.config, check_files=False)  # no release is uploaded
    jobs = read_trace(args.trace)
    names = list(POLICIES) if args.policy == "all" else [args.policy]
    reports = {name: simulate(config, jobs, name) for name in names}
    if args.json:
        print_json(reports)
        return 0
    print_table(
        [
            "policy",
            "jobs",
            "makespan_h",
            "mean_wait_s",
            "p95_wait_s",
            "vm_hours",
            "idle_vm_h",
            "cost",
            "launches",
        ],
        [
            [
                name,
                r["jobs"],
                f"{r['makespan_s'] / 3600:.2f}",
                f"{r['mean_wait_s']:.0f}",
                f"{r['p95_wait_s']:.0f}",
                f"{r['vm_hours']:.1f}",
                f"{r['idle_vm_hours']:.1f}",
                f"{r['cost']:.2f}",
                r["launches"],
            ]
            for name, r in reports.items()
        ],
    )
    for name, report in reports.items():
        for cloud, figures in report["clouds"].items():
            print(
                f"  {name:<8} {cloud}: {figures['vms']} VMs, {figures['vm_hours']:.1f} "
                f"VM-hours, cost {figures['cost']:.2f}, idle {figures['idle_vm_hours']:.1f} h"
            )
    return 0
