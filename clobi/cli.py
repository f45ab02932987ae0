"""The entry point: parse arguments, run one command, turn errors into one line on stderr."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
import traceback

import job_agent.cli
import jobmgmt.cli
import resource_manager.cli
from clobi import demo
from shared import sessionfile
from shared.errors import AwsError, ClobiError
from shared.session import MISSING_CODES, exists


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
    top.add_argument("--version", action="version", version=f"clobi {_version()}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.register(commands)
    resource_manager.cli.register(commands)
    job_agent.cli.register(commands)
    jobmgmt.cli.register(commands)
    _debug_everywhere(top)
    return top


def _debug_everywhere(parser: argparse.ArgumentParser) -> None:
    """`--debug` after the command too (`clobi status --debug`), wherever it is typed."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if not any("--debug" in a.option_strings for a in sub._actions):
                    sub.add_argument(
                        "--debug",
                        action="store_true",
                        default=argparse.SUPPRESS,  # the top-level value stands otherwise
                        help="show tracebacks and debug logs",
                    )
                _debug_everywhere(sub)


def _version() -> str:
    try:
        return importlib.metadata.version("clobi")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


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
        print(f"clobi: error: {_gone(args, err) or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # what the command started is cleaned up by its own finally
        if sys.stderr.isatty():
            sys.stderr.write("\r\x1b[2K")  # a progress line may be open
        print("clobi: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


UNREACHABLE = "EndpointConnectionError"


def _gone(args: argparse.Namespace, err: ClobiError) -> str | None:
    """For an error that says a queue, table or bucket is missing: whether the command's
    session is gone from its endpoint (an embedded endpoint stopped or restarted, a cleanup
    elsewhere), in words that say what to do."""
    if not isinstance(err, AwsError) or err.code not in (*MISSING_CODES, UNREACHABLE):
        return None
    try:
        info = sessionfile.resolve(getattr(args, "session", None))
    except ClobiError:
        return None
    if err.code == UNREACHABLE and info.endpoint_url and info.endpoint_url in str(err):
        return (
            f"the endpoint of session {info.id}, {info.endpoint_url}, does not answer "
            "(the embedded endpoint: `clobi local up` starts it again, with its sessions)"
        )
    if exists(info) is not False:
        return None
    return (
        f"session {info.id} no longer exists on its endpoint {info.endpoint_url or 'AWS'} "
        "(cleaned up, or an embedded endpoint started without its state); "
        f"`clobi session cleanup --session {info.id}` forgets it"
    )
