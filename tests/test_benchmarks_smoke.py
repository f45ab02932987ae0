"""The benchmarks at toy size, so they cannot rot. Measures nothing: asserts they run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_benchmark_scenario_runs_at_smoke_size(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = tmp_path.glob("smoke-*.json")
    report = json.loads(result.read_text())
    assert set(report["scenarios"]) == {
        "throughput",
        "latency",
        "submit",
        "cancel",
        "idle",
        "scale",
        "durable",
        "restore",
    }
    throughput = {f["name"]: f["median"] for f in report["scenarios"]["throughput"]}
    assert throughput["jobs/s"] > 0 and throughput["requests/job all"] > 0
    if importlib.util.find_spec("celery") is None:  # the `bench` extra is not installed
        assert "Celery peer skipped" in done.stderr and "celery jobs/s" not in throughput
    else:
        assert throughput["celery jobs/s"] > 0 and throughput["clobi/celery jobs/s"] > 0
    assert report["machine"]["cores"] == os.cpu_count()
