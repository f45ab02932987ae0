"""What the tables hold and the components exchange about jobs and VMs: states, reasons, a
user's job spec, a status row, an agent's task, a VM record."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field

from shared.models import PRINTABLE_PATTERN, Frozen

# --- jobs ------------------------------------------------------------------------------------


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SAVING = "saving"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class Reason(StrEnum):
    """Why a job failed or was cancelled; machine-readable."""

    EXIT_CODE = "exit_code"
    WALLTIME = "walltime"
    LOST_VM = "lost_vm"
    CANCELLED = "cancelled"
    INPUT_ERROR = "input_error"
    OUTPUT_ERROR = "output_error"
    RELEASE_ERROR = "release_error"
    INVALID = "invalid"
    AGENT_ERROR = "agent_error"
    TOO_BIG = "too_big"  # more cores than any VM of the session's clouds has


class JobSpec(Frozen):
    """What a user asks for: one script, run `count` times. Paths are local to the submitter."""

    script: str
    count: Annotated[int, Field(ge=1, le=100_000)] = 1
    priority: Annotated[int, Field(ge=1, le=10)] | None = None
    release: str | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    cores: Annotated[int, Field(ge=1, le=256)] = 1
    walltime: Annotated[int, Field(ge=1)] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=100)] | None = None
    name: Annotated[str, Field(max_length=64, pattern=PRINTABLE_PATTERN)] | None = None
    env: dict[str, str] = {}
    args: tuple[str, ...] = ()


class JobStatus(Frozen):
    """One row of `clobi status`."""

    id: str
    name: str
    state: JobState
    priority: int
    attempt: int
    exit_code: int | None = None
    reason: str | None = None
    vm: str | None = None
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_requested: bool = False
    max_attempts: int = 1
    result_key: str | None = None

    def public(self) -> dict[str, Any]:
        from shared.timeutil import iso

        out = self.model_dump(mode="python")
        for key in ("submitted_at", "started_at", "finished_at"):
            out[key] = iso(out[key])
        out["state"] = str(self.state)
        return out


class JobTask(Frozen):
    """What an agent needs to run one attempt of a job (stored in the job item)."""

    id: str
    name: str
    script: str  # file name of the script inside the input sandbox
    args: tuple[str, ...] = ()
    env: dict[str, str] = {}
    release: str | None = None
    cores: int = 1
    walltime: int | None = None
    outputs: tuple[str, ...] = ()
    sandbox_key: str  # S3 key of the content-addressed input sandbox
    priority: int = 1
    attempt: int
    max_attempts: int


# --- VMs -------------------------------------------------------------------------------------


class VmState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def live(self) -> bool:
        """Starting, running or draining: a VM that is, or will be, in its cloud."""
        return self in (VmState.STARTING, VmState.RUNNING, VmState.DRAINING)


class VmRecord(Frozen):
    id: str
    cloud: str
    state: VmState
    cores: int
    instance_id: str | None = None
    running_jobs: tuple[str, ...] = ()
    drain: bool = False
    started_at: datetime | None = None
    last_heartbeat_at: datetime | None = None

    def public(self) -> dict[str, Any]:
        from shared.timeutil import iso

        return {
            "id": self.id,
            "cloud": self.cloud,
            "state": str(self.state),
            "cores": self.cores,
            "running_jobs": len(self.running_jobs),
            "instance_id": self.instance_id,
            "started_at": iso(self.started_at),
            "last_heartbeat_at": iso(self.last_heartbeat_at),
        }
