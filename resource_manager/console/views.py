"""What the console shows, as plain text lines rendered from the state (no urwid here)."""

from __future__ import annotations

from datetime import datetime

from resource_manager.console.state import ConsoleState
from shared.models import Ec2Cloud, LocalCloud
from shared.records import JobState, VmState

LIVE = (VmState.STARTING, VmState.RUNNING, VmState.DRAINING)


def clouds_lines(
    state: ConsoleState, clouds: tuple[LocalCloud | Ec2Cloud, ...], max_override: dict[str, int]
) -> list[str]:
    lines = ["CLOUD      START  RUN  DRAIN  CORES  MAX  COST/H"]
    for cloud in clouds:
        vms = [vm for vm in state.snapshot.vms if vm.cloud == cloud.name]
        count = {s: sum(1 for vm in vms if vm.state is s) for s in LIVE}
        live = sum(count.values())
        lines.append(
            f"{cloud.name[:10]:<10} {count[VmState.STARTING]:>5}  "
            f"{count[VmState.RUNNING]:>3}  {count[VmState.DRAINING]:>5}  "
            f"{live * cloud.cores_per_vm:>5}  "
            f"{max_override.get(cloud.name, cloud.max_vms):>3}  "
            f"{live * cloud.cost_per_hour:>6.2f}"
        )
    return lines


def vms_lines(state: ConsoleState, now: datetime, limit: int = 12) -> list[str]:
    lines = ["VM                CLOUD   STATE     JOBS  BEAT"]
    vms = [vm for vm in state.snapshot.vms if vm.state.live][:limit]
    for vm in vms:
        age = (
            f"{(now - vm.last_heartbeat_at).total_seconds():.0f}s" if vm.last_heartbeat_at else "-"
        )
        lines.append(
            f"{vm.id[:17]:<17} {vm.cloud[:7]:<7} {vm.state!s:<9} {len(vm.running_jobs):>4}  {age}"
        )
    if not vms:
        lines.append("(no live VM: `start CLOUD N`)")
    return lines


def queues_lines(state: ConsoleState) -> list[str]:
    depths, flight = state.snapshot.queue_depths, state.snapshot.queue_in_flight
    names = sorted((k for k in depths if k.startswith("p")), key=lambda k: -int(k[1:]))
    names += ["dlq"] if "dlq" in depths else []
    lines = ["QUEUE  DEPTH  FLIGHT"]
    lines += [f"{name:<6} {depths[name]:>5}  {flight.get(name, 0):>6}" for name in names]
    return lines


def jobs_lines(state: ConsoleState) -> list[str]:
    jobs = state.snapshot.jobs
    lines = ["JOBS"]
    lines += [f"{s!s:<10} {jobs.get(str(s), 0):>6}" for s in JobState]
    return lines


def recent_lines(state: ConsoleState, count: int) -> list[str]:
    """The last job transitions, newest last (padded so the pane keeps its height)."""
    with state.lock:
        lines = list(state.recent)[-count:]
    return lines + [""] * (count - len(lines)) if lines else ["(none yet)"] + [""] * (count - 1)


def header(state: ConsoleState) -> str:
    busy = f"  [{state.busy}]" if state.busy else ""
    return (
        f"clobi rm  session {state.session_id}  autoscale "
        f"{'ON' if state.autoscale else 'off'}{busy}   ? help  q quit"
    )
