"""`clobi agent`: run a Job Agent on this VM until it is drained or stopped."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from job_agent.agent import JobAgent
from job_agent.boot import load_bootstrap
from shared.home import clobi_home
from shared.records import Reason

# Left by a drained agent on EC2 for clobi-agent.service's ExecStopPost, which powers off.
POWER_OFF = "power-off"


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "agent",
        help="run a Job Agent (on a VM)",
        description="Run a Job Agent: poll the session's queues, claim and run jobs, ship their "
        "sandboxes, until the VM is drained. Without --bootstrap it reads EC2 "
        "user-data through IMDSv2.",
    )
    parser.add_argument(
        "--bootstrap",
        type=Path,
        metavar="FILE",
        help="bootstrap JSON written by the Resource Manager",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="working area (default: the bootstrap's, else $CLOBI_HOME/agent/VM)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Names the agent in every AWS request's User-Agent (CloudTrail, the fault proxy).
    os.environ["AWS_SDK_UA_APP_ID"] = "clobi-agent"
    os.umask(0o077)  # its logs, caches and work folders are its own (a job's, its slot user's)
    bootstrap = load_bootstrap(args.bootstrap)
    root = args.workdir or Path(bootstrap.workdir or clobi_home() / "agent" / bootstrap.vm_id)
    root.mkdir(parents=True, exist_ok=True)
    _log_to(root / "agent.log", debug=args.debug or os.environ.get("CLOBI_DEBUG") == "1")
    on_ec2 = any(
        c.name == bootstrap.cloud and c.driver == "ec2" for c in bootstrap.session.config.clouds
    )
    power_off = _power_off(on_ec2, root)
    agent = JobAgent(bootstrap, root, power_off=power_off, watch_spot=on_ec2)

    def on_term(signum: int, frame: object) -> None:
        # Stopped from outside: kill our jobs and record them lost, so they are retried now.
        agent.stop(Reason.LOST_VM)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    agent.run()
    if agent.drain.requested or agent.session_gone:  # not stopped from outside: power the VM off
        power_off()
    return 0


def _power_off(on_ec2: bool, root: Path) -> Callable[[], None]:
    """Local VMs: the process exits. EC2: it leaves POWER_OFF in its work folder and exits;
    the unit's stop hook, which alone has the privilege, then shuts the instance down, which
    terminates it (the driver launches with InstanceInitiatedShutdownBehavior=terminate).
    Should neither happen, the Resource Manager terminates a VM whose record is stopped."""

    def off() -> None:
        if on_ec2:
            (root / POWER_OFF).write_text("drained\n")
        logging.shutdown()
        os._exit(0)

    return off


def _log_to(path: Path, debug: bool) -> None:
    handlers: list[logging.Handler] = [logging.FileHandler(path), logging.StreamHandler(sys.stderr)]
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        handlers=handlers,
        format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s",
    )
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.INFO if debug else logging.WARNING)
