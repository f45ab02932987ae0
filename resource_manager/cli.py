"""The Resource Manager's commands: `clobi vm`, `clobi rm`, `clobi autoscale`, `clobi simulate`
(`clobi local` and `clobi session`: session_cli.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from resource_manager import session_cli
from resource_manager.autoscaler import SETTING, autoscale_enabled
from resource_manager.headless import run_headless, step_interval_s
from resource_manager.pool import Pool
from resource_manager.simulate import POLICIES, read_trace, simulate
from shared import sessionfile
from shared.cli import (
    add_json,
    add_session,
    interval,
    print_json,
    print_table,
)
from shared.config import load_session_config
from shared.errors import ClobiError
from shared.events import SESSION_KEY
from shared.session import Session


def register(commands: Any) -> None:
    session_cli.register(commands)
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
