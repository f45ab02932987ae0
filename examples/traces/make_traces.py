"""Write the shipped job traces (seeded, so the files are reproducible):

- burst.csv: a burst of 2,000 short jobs within one minute;
- day.csv: a day of mixed arrivals following a working-day cycle;
- mixed.csv: four hours of jobs of 1 to 8 cores (with sim-mixed.toml: 2- and 8-core clouds).
Usage: python examples/traces/make_traces.py [--jobs-per-day N] [--out DIR]
"""

import argparse
import csv
import math
import random
from pathlib import Path


def burst(rng: random.Random) -> list[tuple[float, float, int, int]]:
    return [
        (
            round(rng.uniform(0, 60), 1),
            round(rng.uniform(30, 180), 1),
            1,
            3 if rng.random() < 0.1 else 1,
        )
        for _ in range(2000)
    ]


def day(rng: random.Random, jobs: int) -> list[tuple[float, float, int, int]]:
    rows = []
    while len(rows) < jobs:
        t = rng.uniform(0, 86400)
        busy = 0.15 + 0.85 * max(0.0, math.sin(math.pi * (t / 3600 - 7) / 12))  # 7h-19h
        if rng.random() > busy:
            continue
        runtime = min(6 * 3600, rng.lognormvariate(math.log(600), 1.0))
        rows.append(
            (
                round(t, 1),
                round(runtime, 1),
                rng.choice((1, 1, 1, 2)),
                rng.choices((1, 2, 3), (70, 20, 10))[0],
            )
        )
    return sorted(rows)


def mixed(rng: random.Random) -> list[tuple[float, float, int, int]]:
    return sorted(
        (
            round(rng.uniform(0, 4 * 3600), 1),
            round(min(3 * 3600, rng.lognormvariate(math.log(600), 0.8)), 1),
            rng.choices((1, 2, 4, 8), (50, 25, 15, 10))[0],
            rng.choices((1, 2, 3), (70, 20, 10))[0],
        )
        for _ in range(600)
    )


def write(path: Path, rows: list[tuple[float, float, int, int]]) -> None:
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["arrival_s", "runtime_s", "cores", "priority"])
        out.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs-per-day", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    write(args.out / "burst.csv", burst(random.Random(2008)))
    write(args.out / "day.csv", day(random.Random(2009), args.jobs_per_day))
    write(args.out / "mixed.csv", mixed(random.Random(2026)))


if __name__ == "__main__":
    main()
