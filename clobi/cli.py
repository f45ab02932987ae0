"""The entry point: parse arguments, run one command, turn errors into one line on stderr."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

import job_agent.cli
import jobmgmt.cli
import resource_manager.cli
from clobi import demo
from shared.errors import ClobiError


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="clobi",
        description="clobi: an elastic job system. Queues on SQS, bookkeeping in DynamoDB, "
        "sandboxes on S3, VMs on your own machine and on EC2.",
        epilog="Start with `clobi demo`, or `clobi session init` for a session of your own.",
    )
    top.add_argument(
        "--debug",
        action="store_true",
        help="show tracebacks and debug logs (also CLOBI_DEBUG=1, which local VMs inherit)",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.register(commands)
    resource_manager.cli.register(commands)
    job_agent.cli.register(commands)
    jobmgmt.cli.register(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.debug = args.debug or os.environ.get("CLOBI_DEBUG") == "1"
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
        for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
            logging.getLogger(noisy).setLevel(logging.INFO)
    try:
        return int(args.func(args))
    except ClobiError as err:
        if args.debug:
            traceback.print_exc()
        print(f"clobi: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("clobi: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
