"""The autoscaling policy as a pure function of the pool, and the simulator built on it."""

from __future__ import annotations

from pathlib import Path

from resource_manager.policy import Policy, PoolView, VmView
from resource_manager.simulate import Job, read_trace, simulate
from shared.config import load_session_config
from shared.models import AutoscaleConfig, Ec2Cloud, LocalCloud, SessionConfig

LOCAL = LocalCloud(name="local", driver="local", cores_per_vm=2, max_vms=4, cost_per_hour=0.0)
AWS = Ec2Cloud(name="aws", driver="ec2", ami="ami-1", cores_per_vm=2, max_vms=10, cost_per_hour=0.1)


def vm(
    name: str, cloud: str = "local", busy: int = 0, starting: bool = False, started: float = 0.0
) -> VmView:
    return VmView(name, cloud, 2, busy, starting, started)


def test_a_burst_launches_every_vm_it_needs_in_one_step() -> None:
    policy = Policy(AutoscaleConfig(enabled=True), (LOCAL,))
    decisions = policy.decide(0.0, PoolView((), queued_cores=40))
    assert [(d.action, d.cloud, d.count) for d in decisions] == [("launch", "local", 4)]


def test_the_cheap_cloud_fills_first_then_bursts_to_the_dear_one() -> None:
    policy = Policy(AutoscaleConfig(enabled=True), (AWS, LOCAL))
    decisions = policy.decide(0.0, PoolView((), queued_cores=20))
    assert [(d.cloud, d.count) for d in decisions] == [("local", 4), ("aws", 6)]


def test_starting_vms_count_as_supply() -> None:
    policy = Policy(AutoscaleConfig(enabled=True), (LOCAL,))
    pool = PoolView((vm("a", starting=True), vm("b", starting=True)), queued_cores=4)
    assert policy.decide(0.0, pool) == []


def test_launch_rate_and_budget_cap_the_launches() -> None:
    policy = Policy(AutoscaleConfig(enabled=True, max_launches_per_min=3), (AWS,))
    assert policy.decide(0.0, PoolView((), 100))[0].count == 3
    assert policy.decide(10.0, PoolView((), 100)) == []
    assert policy.decide(61.0, PoolView((), 100))[0].count == 3
    budget = Policy(AutoscaleConfig(enabled=True, budget_per_hour=0.35), (AWS,))
    assert budget.decide(0.0, PoolView((), 100))[0].count == 3


def test_idle_vms_are_drained_after_the_timeout_busy_ones_never() -> None:
    policy = Policy(AutoscaleConfig(enabled=True, idle_timeout_s=60), (LOCAL,))
    pool = PoolView((vm("idle"), vm("busy", busy=2)), queued_cores=0)
    assert policy.decide(0.0, pool) == []
    assert policy.decide(59.0, pool) == []
    decisions = policy.decide(60.0, pool)
    assert [(d.action, d.vm) for d in decisions] == [("drain", "idle")]


def test_min_vms_are_kept_and_started() -> None:
    cloud = LOCAL.model_copy(update={"min_vms": 1})
    policy = Policy(AutoscaleConfig(enabled=True, idle_timeout_s=0), (cloud,))
    assert [(d.action, d.count) for d in policy.decide(0.0, PoolView((), 0))] == [("launch", 1)]
    assert policy.decide(100.0, PoolView((vm("only"),), 0)) == []


def test_a_vm_past_its_lifetime_is_drained() -> None:
    policy = Policy(AutoscaleConfig(enabled=True, max_vm_lifetime_s=3600), (LOCAL,))
    pool = PoolView((vm("old", busy=1, started=0.0),), queued_cores=0)
    assert policy.decide(3599.0, pool) == []
    assert [d.vm for d in policy.decide(3600.0, pool)] == ["old"]


def test_a_failing_cloud_is_backed_off_and_the_next_takes_the_load() -> None:
    policy = Policy(AutoscaleConfig(enabled=True, launch_backoff_s=30), (LOCAL, AWS))
    assert policy.decide(0.0, PoolView((), 4))[0].cloud == "local"
    assert policy.launch_failed("local", 0.0) == 30
    assert [(d.cloud, d.count) for d in policy.decide(1.0, PoolView((), 4))] == [("aws", 2)]
    assert policy.launch_failed("local", 31.0) == 60, "the back-off doubles"
    policy.launch_succeeded("local")
    assert policy.decide(40.0, PoolView((), 4))[0].cloud == "local"


def test_the_simulator_is_deterministic_and_reports_every_figure(tmp_path: Path) -> None:
    config = SessionConfig(
        name="sim", clouds=(LOCAL, AWS), autoscale=AutoscaleConfig(enabled=True, idle_timeout_s=60)
    )
    # two bursts an hour and a half apart: a fixed pool idles through the gap
    jobs = [
        Job(i * 2.0 + (5400 if i >= 150 else 0), 100.0 + i % 7, 1 + i % 2, 1 + i % 3)
        for i in range(300)
    ]
    first = simulate(config, jobs)
    assert simulate(config, jobs) == first
    assert first["finished"] == 300
    assert {
        "makespan_s",
        "mean_wait_s",
        "p95_wait_s",
        "vm_hours",
        "cost",
        "idle_vm_hours",
        "clouds",
    } <= first.keys()
    fixed = simulate(config, jobs, "fixed")
    assert fixed["cost"] > first["cost"], "a fixed pool of max_vms costs more"
    assert fixed["idle_vm_hours"] > first["idle_vm_hours"]


DEAR = Ec2Cloud(name="dear", driver="ec2", ami="ami-1", max_vms=10, cost_per_hour=1.0)


def test_the_budget_counts_draining_vms_and_those_drained_in_the_same_step() -> None:
    config = AutoscaleConfig(enabled=True, budget_per_hour=2.0, max_vm_lifetime_s=3600)
    policy = Policy(config, (DEAR,))
    old = (VmView("a", "dear", 2, 2, False, 0.0), VmView("b", "dear", 2, 2, False, 0.0))
    decisions = policy.decide(3600.0, PoolView(old, queued_cores=8))
    assert [(d.action, d.vm) for d in decisions] == [("drain", "a"), ("drain", "b")]
    draining = tuple(VmView(v.id, "dear", 2, 2, False, 0.0, draining=True) for v in old)
    assert policy.decide(3700.0, PoolView(draining, queued_cores=8)) == []
    one_left = PoolView(draining[:1], queued_cores=8)
    assert [(d.action, d.count) for d in policy.decide(3800.0, one_left)] == [("launch", 1)]


BIG = Ec2Cloud(name="big", driver="ec2", ami="ami-1", cores_per_vm=8, max_vms=4, cost_per_hour=1.0)
TRACES = Path(__file__).parents[2] / "examples" / "traces"


def test_a_job_bigger_than_the_cheap_clouds_vms_gets_a_vm_of_the_cheapest_cloud_that_fits() -> None:
    policy = Policy(AutoscaleConfig(enabled=True), (LOCAL, BIG))
    decisions = policy.decide(0.0, PoolView((), 4, queued_jobs=((4, 1),)))
    assert [(d.cloud, d.count) for d in decisions] == [("big", 1)]
    mixed = PoolView((), 10, queued_jobs=((1, 2), (8, 1)))
    assert [(d.cloud, d.count) for d in policy.decide(1.0, mixed)] == [("local", 1), ("big", 1)]


def test_idle_vms_are_drained_while_only_jobs_they_cannot_hold_wait() -> None:
    policy = Policy(AutoscaleConfig(enabled=True, idle_timeout_s=60), (LOCAL, BIG))
    starting_big = VmView("b", "big", 8, 0, True, 0.0)
    pool = PoolView((vm("small"), starting_big), 4, queued_jobs=((4, 1),))
    assert policy.decide(0.0, pool) == [], "the starting big VM will hold the job"
    assert [(d.action, d.vm) for d in policy.decide(60.0, pool)] == [("drain", "small")]
    fits = PoolView((vm("small2"),), 1, queued_jobs=((1, 1),))
    policy.decide(100.0, fits)
    assert policy.decide(200.0, fits) == [], "a job it can hold keeps it"


def test_the_simulator_runs_mixed_sizes_on_vms_that_hold_them_and_refuses_the_impossible() -> None:
    config = load_session_config(TRACES / "sim-mixed.toml", check_files=False)
    jobs = read_trace(TRACES / "mixed.csv")
    assert {j.cores for j in jobs} == {1, 2, 4, 8}
    report = simulate(config, [*jobs, Job(60.0, 10.0, 16, 1)])
    assert (report["finished"], report["refused"]) == (len(jobs), 1)
    # No VM launched for jobs it cannot hold sits idle: idle time stays a small share.
    assert report["idle_vm_hours"] < 0.1 * report["vm_hours"], report
    for baseline in ("fixed", "per-job"):
        assert simulate(config, jobs, baseline)["finished"] == len(jobs)
