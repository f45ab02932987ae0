"""`python -m job_agent`: the same as `clobi agent` (how local VMs start their agent)."""

import argparse
import sys
from pathlib import Path

from job_agent.cli import run
from shared.errors import ClobiError


def main() -> int:
    parser = argparse.ArgumentParser(prog="clobi agent")
    parser.add_argument("--bootstrap")
    parser.add_argument("--workdir")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args()
    args.bootstrap = Path(args.bootstrap) if args.bootstrap else None
    args.workdir = Path(args.workdir) if args.workdir else None
    try:
        return run(args)
    except ClobiError as err:
        print(f"clobi agent: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
