"""budget_per_hour caps the pool's cost rate for starts by hand too (CLI and console)."""

from __future__ import annotations

from collections.abc import Callable

from resource_manager.pool import Pool
from shared.models import AutoscaleConfig, Ec2Cloud
from shared.records import VmState
from shared.session import Session
from tests.helpers import TmuxConsole, cli, requires_tool, wait_until

DEAR = Ec2Cloud(
    name="aws", driver="ec2", ami="ami-12c6146b", instance_profile="clobi-agent", cost_per_hour=1.0
)


def budget_session(make_session: Callable[..., Session]) -> Session:
    session = make_session(clouds=(DEAR,), autoscale=AutoscaleConfig(budget_per_hour=1.5))
    session.aws.client("iam").create_instance_profile(InstanceProfileName="clobi-agent")
    return session


def live(session: Session) -> int:
    return sum(vm.state is not VmState.FAILED for vm in session.vms.all())


def test_vm_start_refuses_past_the_budget_in_one_line_unless_asked(
    make_session: Callable[..., Session],
) -> None:
    session = budget_session(make_session)
    assert cli("vm", "start", "aws", "--session", session.id).code == 0
    (vm,) = [v.id for v in session.vms.all()]
    assert Pool(session).drain([vm]) == [vm]  # a draining VM is still billed
    refused = cli("vm", "start", "aws", "--session", session.id)
    assert refused.code != 0 and live(session) == 1
    line = refused.err.strip()
    assert "\n" not in line and "2.00/h" in line and "budget_per_hour 1.50/h" in line, line
    assert "--over-budget" in line
    forced = cli("vm", "start", "aws", "--over-budget", "--session", session.id)
    assert forced.code == 0, forced.err
    assert live(session) == 2


@requires_tool("tmux")
def test_the_consoles_start_refuses_past_the_budget_unless_asked(
    make_session: Callable[..., Session],
) -> None:
    session = budget_session(make_session)
    console = TmuxConsole(session.id, width=200)
    try:
        console.type("start aws 1", "Enter")
        wait_until(lambda: "started vm-aws-" in console.screen(), what="the first start")
        console.type("start aws 1", "Enter")
        wait_until(lambda: "error: cloud aws" in console.screen(), what="the refusal")
        refusal = next(ln for ln in console.screen().splitlines() if "error: cloud aws" in ln)
        assert "2.00/h" in refusal and "budget_per_hour 1.50/h" in refusal, refusal
        assert live(session) == 1
        console.type("start aws 1 over-budget", "Enter")
        wait_until(lambda: live(session) == 2, what="the explicit start past the budget")
    finally:
        console.close()
