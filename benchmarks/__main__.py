"""`python -m benchmarks [SCENARIO...] [--runs N] [--smoke]`: run, print a table, write JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Figure
from benchmarks.scenarios import SCENARIOS, SMOKE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"some of: {', '.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (default 3)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, one run: proves the benchmarks work, measures nothing",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results"),
        help="folder for the JSON results (default benchmarks/results)",
    )
    args = parser.parse_args(argv)
    names = args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}")
    runs = 1 if args.smoke else args.runs
    report: dict[str, Any] = {
        "machine": {
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "smoke": args.smoke,
        "runs": runs,
        "scenarios": {},
    }
    for name in names:
        figures: dict[str, Figure] = {}
        for run in range(runs):
            began = time.monotonic()
            values = SCENARIOS[name](**(SMOKE[name] if args.smoke else {}))
            print(
                f"{name}: run {run + 1}/{runs} took {time.monotonic() - began:.0f} s",
                file=sys.stderr,
            )
            for key, value in values.items():
                figures.setdefault(key, Figure(key, "")).values.append(float(value))
        report["scenarios"][name] = [f.summary() for f in figures.values()]
        _print(name, figures)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{'smoke' if args.smoke else 'bench'}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{os.cpu_count()} cores; results written to {path}")
    return 0


def _print(name: str, figures: dict[str, Figure]) -> None:
    print(f"\n{name}")
    for figure in figures.values():
        s = figure.summary()
        spread = f"  ({s['min']:.3g} - {s['max']:.3g})" if s["runs"] > 1 else ""
        print(f"  {figure.name:<34} {s['median']:>10.3g}{spread}")


if __name__ == "__main__":
    sys.exit(main())
