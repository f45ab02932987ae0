"""The scenarios: each run builds its own world and returns its figures (name -> value)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from functools import partial
from typing import Any

from benchmarks import peer
from benchmarks.harness import (
    Bench,
    bench,
    peak_rss_mb,
    percentile,
    wait_all_done,
    wait_for,
)
from job_agent.runner import job_processes
from jobmgmt import JobSpec
from resource_manager.drivers.local import LocalDriver
from shared.records import JobState
from shared.timeutil import parse_iso

Figures = dict[str, float]


def _per_service(requests: dict[str, int], jobs: int) -> Figures:
    by_service: Counter[str] = Counter()
    for operation, count in requests.items():
        by_service[operation.split(".", 1)[0]] += count
    out = {f"requests/job {svc}": n / jobs for svc, n in sorted(by_service.items())}
    out["requests/job all"] = sum(by_service.values()) / jobs
    return out


def _backend_per_service(cpu_s: dict[str, float], jobs: int) -> Figures:
    """The endpoint's CPU inside its backend (moto), per service: where a job's cost lies."""
    by_service: dict[str, float] = defaultdict(float)
    for operation, seconds in cpu_s.items():
        by_service[operation.split(".", 1)[0]] += seconds
    return {f"backend cpu ms/job {svc}": s * 1000 / jobs for svc, s in sorted(by_service.items())}


def _agent_pids(b: Bench) -> list[int]:
    driver = LocalDriver(b.session.info, b.session.info.config.clouds[0])  # type: ignore[arg-type]
    return [pid for vm in b.pool.vms() if (pid := driver.agent_pid(vm.id)) is not None]


def _run_jobs(b: Bench, script: str, jobs: int, timeout_s: float) -> tuple[float, dict[str, Any]]:
    """Submit `jobs` no-op jobs; seconds from first submit to last result, and endpoint stats."""
    b.stats(reset=True)
    began = time.time()
    ids = b.client.submit(JobSpec(script=script, count=jobs))
    wait_all_done(b.client, timeout_s)
    stats = b.stats()
    last = max(
        parse_iso(item.get("finished_at")).timestamp()  # type: ignore[union-attr]
        for item in b.session.jobs.get_many(ids).values()
    )
    return last - began, stats


def throughput(jobs: int = 2000, vms: int = 2, rm: bool = True, celery: bool = True) -> Figures:
    """clobi's throughput, then (with `celery`) Celery's on the same endpoint, and their ratio."""
    with bench(vms=vms, cores=2) as b:
        # No work, and a 1 KiB result (its stdout): clobi's result archive, Celery's value.
        script = b.script("noop.sh", "printf '%01024d' 0\n")
        figures = _clobi_throughput(b, script, jobs, rm)
        if celery:
            b.pool.terminate_all()  # the peer has the endpoint to itself
            figures.update(_celery_throughput(b, script, jobs, figures["jobs/s"]))
        return figures


def _clobi_throughput(b: Bench, script: str, jobs: int, rm: bool) -> Figures:
    rm_proc = _start_rm(b) if rm else None
    cpu0 = b.stats()["cpu_s"]
    try:
        elapsed, stats = _run_jobs(b, script, jobs, timeout_s=max(300.0, jobs))
        figures = {
            "jobs/s": jobs / elapsed,
            "seconds": elapsed,
            "endpoint cpu ms/job": (stats["cpu_s"] - cpu0) * 1000 / jobs,
        }
        figures.update(_per_service(stats["requests"], jobs))
        figures.update(_backend_per_service(stats["backend_cpu_s"], jobs))
        agents = [peak_rss_mb(pid) or 0.0 for pid in _agent_pids(b)]
        figures["peak RSS agent MB"] = max(agents, default=0.0)
        figures["peak RSS endpoint MB"] = peak_rss_mb(b.endpoint_pid) or 0.0
        if rm_proc is not None:
            figures["peak RSS resource manager MB"] = peak_rss_mb(rm_proc.pid) or 0.0
    finally:
        if rm_proc is not None:
            rm_proc.terminate()
            rm_proc.wait(15)
    return figures


def _celery_throughput(b: Bench, script: str, jobs: int, clobi_rate: float) -> Figures:
    """The peer: 2 Celery workers x 2 processes; skipped, with one line, without the extra."""
    if not peer.available():
        print(
            f"throughput: Celery peer skipped: Celery is not installed ({peer.INSTALL_HINT})",
            file=sys.stderr,
        )
        return {}
    run = peer.throughput(b, script, jobs, workers=2, concurrency=2)
    rate = jobs / run["seconds"]
    figures = {
        "celery jobs/s": rate,
        "celery seconds": run["seconds"],
        "celery submit seconds": run["submit seconds"],
        "celery endpoint cpu ms/job": run["cpu_s"] * 1000 / jobs,
    }
    per_service = _per_service(run["requests"], jobs)
    per_service.update(_backend_per_service(run["backend_cpu_s"], jobs))
    figures.update({f"celery {name}": value for name, value in per_service.items()})
    figures["celery peak RSS worker MB"] = run["peak RSS worker MB"]
    figures["clobi/celery jobs/s"] = clobi_rate / rate
    return figures


def _start_rm(b: Bench) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "clobi", "rm", "--headless", "--session", b.session.id],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _finished(b: Bench, job: str) -> bool:
    return b.client.status([job])[0].state.terminal


def _gone(job: str) -> bool:
    return not job_processes(job)


def latency(samples: int = 20, pause_s: float = 1.0) -> Figures:
    with bench(vms=2, cores=2) as b:
        script = b.script("noop.sh", "true\n")
        to_start, to_finish = [], []
        for index in range(samples):
            time.sleep(pause_s)  # let the pool go idle again
            began = time.time()
            (job,) = b.client.submit(JobSpec(script=script), token=f"lat-{index}")
            wait_for(partial(_finished, b, job), 60, poll_s=0.02)
            row = b.client.status([job])[0]
            assert row.started_at and row.finished_at
            to_start.append(row.started_at.timestamp() - began)
            to_finish.append(row.finished_at.timestamp() - began)
        return {
            "submit-to-start p50 s": percentile(to_start, 50),
            "submit-to-start p95 s": percentile(to_start, 95),
            "submit-to-finish p50 s": percentile(to_finish, 50),
            "submit-to-finish p95 s": percentile(to_finish, 95),
        }


def submit_and_status(jobs: int = 10_000) -> Figures:
    with bench(vms=0) as b:
        script = b.script("noop.sh", "true\n")
        jobfile = b.home / "jobs.toml"
        jobfile.write_text(f'[[job]]\nscript = "noop.sh"\ncount = {jobs}\n')
        assert script
        b.stats(reset=True)
        began = time.monotonic()
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "clobi",
                "submit",
                str(jobfile),
                "--json",
                "--session",
                b.session.id,
            ],
            capture_output=True,
            check=True,
        )
        submit_s = time.monotonic() - began
        requests = sum(b.stats(reset=True)["requests"].values())
        began = time.monotonic()
        rows = b.client.status()
        api_s = time.monotonic() - began
        began = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "clobi", "status", "--json", "--session", b.session.id],
            capture_output=True,
            check=True,
        )
        cli_s = time.monotonic() - began
        status_requests = sum(b.stats()["requests"].values())
        assert len(rows) == jobs and out.stdout
        return {
            "submit s (CLI)": submit_s,
            "submit requests": requests,
            "status s (API)": api_s,
            "status s (CLI)": cli_s,
            "status requests (API+CLI)": status_requests,
        }


def cancel(jobs: int = 4) -> Figures:
    with bench(vms=2, cores=2, heartbeat_s=1) as b:
        script = b.script("sleep.sh", "sleep 1000\n")
        ids = b.client.submit(JobSpec(script=script, count=jobs))
        wait_for(lambda: all(job_processes(j) for j in ids), 60)
        gone = []
        for job in ids:
            began = time.monotonic()
            b.client.cancel([job])
            wait_for(partial(_gone, job), 30, poll_s=0.02)
            gone.append(time.monotonic() - began)
        return {"cancel-to-gone p50 s": percentile(gone, 50), "cancel-to-gone max s": max(gone)}


def idle(seconds: float = 60.0, settle_s: float = 3.0) -> Figures:
    with bench(vms=1, cores=2) as b:
        time.sleep(settle_s)  # the agent settles into its idle long poll
        b.stats(reset=True)
        time.sleep(seconds)
        agent = b.stats(reset=True)["requests"]
        rm_proc = _start_rm(b)
        try:
            time.sleep(settle_s)
            b.stats(reset=True)
            time.sleep(seconds)
            both = b.stats()["requests"]
        finally:
            rm_proc.terminate()
            rm_proc.wait(15)
        per_min = 60.0 / seconds
        agent_sqs = sum(n for op, n in agent.items() if op.startswith("sqs."))
        return {
            "idle agent requests/min": sum(agent.values()) * per_min,
            "idle agent SQS requests/min": agent_sqs * per_min,
            "idle RM requests/min": (sum(both.values()) - sum(agent.values())) * per_min,
        }


def scale(
    jobs: int = 500,
    vm_counts: tuple[int, ...] = (1, 2, 4, 8),
    backlogs: tuple[int, ...] = (100, 1000, 10_000),
) -> Figures:
    figures: Figures = {}
    for vms in vm_counts:
        run = throughput(jobs=jobs, vms=vms, rm=False, celery=False)
        figures[f"jobs/s with {vms} VMs"] = run["jobs/s"]
    for backlog in backlogs:
        figures[f"jobs/s with backlog {backlog}"] = _backlog_rate(backlog, min(backlog, jobs))
    return figures


def _backlog_rate(backlog: int, measured: int) -> float:
    """Queue `backlog` jobs, then start 2 VMs: the rate of the first `measured` completions,
    from the jobs' own finish times (the polling below is rare, to disturb little)."""
    with bench(vms=0, cores=2) as b:
        script = b.script("noop.sh", "true\n")
        ids = b.client.submit(JobSpec(script=script, count=backlog))
        b.start_vms(2)
        began = time.time()
        wait_for(
            lambda: b.session.jobs.count_state(JobState.SUCCEEDED) >= measured,
            max(300.0, measured),
            poll_s=min(5.0, measured / 20),
        )
        finished = sorted(
            parse_iso(i["finished_at"]).timestamp()  # type: ignore[union-attr]
            for i in b.session.jobs.get_many(ids).values()
            if i.get("finished_at")
        )
        return measured / (finished[measured - 1] - began)


SCENARIOS: dict[str, Callable[..., Figures]] = {
    "throughput": throughput,
    "latency": latency,
    "submit": submit_and_status,
    "cancel": cancel,
    "idle": idle,
    "scale": scale,
    "durable": lambda **kw: _durable().durable_throughput(**kw),
    "restore": lambda **kw: _durable().restore(**kw),
}
SMOKE: dict[str, dict[str, Any]] = {
    "throughput": {"jobs": 10},
    "latency": {"samples": 3, "pause_s": 0.2},
    "submit": {"jobs": 200},
    "cancel": {"jobs": 2},
    "idle": {"seconds": 1.0, "settle_s": 0.5},
    "scale": {"jobs": 10, "vm_counts": (2,), "backlogs": (10,)},
    "durable": {"jobs": 10},
    "restore": {"jobs": 200},
}


def _durable() -> Any:
    from benchmarks import durable  # it builds on this module's throughput run

    return durable
