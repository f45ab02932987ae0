"""The pydantic models every component agrees on: configs, job specs and records, VMs, bootstrap."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,19}$"
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]+$"  # no control characters (they reach terminals)
USER_PATTERN = r"^[a-z_][a-z0-9_-]{0,27}$"  # a POSIX user name, room for "-<slot>"
EC2_JOB_USER = "clobi-job"  # the slot users' prefix on EC2 VMs when the session names none
SNAPSHOT_PATTERN = r"^snap-([0-9a-f]{8}|[0-9a-f]{17})$"
REGION_PATTERN = r"^[a-z]{2,}(-[a-z]+)+-[0-9]+$"
RELEASE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
# What each pattern asks for, in words: error lines say this instead of the regex.
PATTERN_MEANING = {
    NAME_PATTERN: "lowercase letters, digits and '-', at most 20, not starting with '-'",
    PRINTABLE_PATTERN: "printable text (no newlines, escapes or other control characters)",
    USER_PATTERN: "a user name: lowercase letters, digits, '_' and '-', at most 32",
    SNAPSHOT_PATTERN: "an EBS snapshot id (snap- and 8 or 17 hex digits)",
    REGION_PATTERN: "an AWS region such as us-east-1",
}


def _url(value: str) -> str:
    # Checked here: botocore would only refuse it at the first request, with a traceback.
    url = urlsplit(value)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return value


def _endpoint(value: str) -> str:
    if value != "local" and urlsplit(value).scheme not in ("http", "https"):
        raise ValueError('must be "local" or an http:// or https:// URL')
    return value if value == "local" else _url(value)


Region = Annotated[str, Field(pattern=REGION_PATTERN)]
HttpUrl = Annotated[str, AfterValidator(_url)]
EndpointUrl = Annotated[str, AfterValidator(_endpoint)]  # "local": the embedded endpoint


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- session config (TOML) -------------------------------------------------------------------


class ReleaseConfig(Frozen):
    """A software release jobs can name; mounted read-only on the VMs."""

    archive: str | None = Field(
        default=None, description="tar.gz uploaded at session create (dir volumes)"
    )
    image: str | None = Field(
        default=None, description="ext4/squashfs image uploaded at create (loop)"
    )
    snapshot: Annotated[str, Field(pattern=SNAPSHOT_PATTERN)] | None = Field(
        default=None, description="EBS snapshot id: an ebs volume on EC2 VMs"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ReleaseConfig:
        if self.archive and self.image:
            raise ValueError("give archive or image, not both")
        if not (self.archive or self.image or self.snapshot):
            raise ValueError("give an archive, an image or a snapshot")
        return self


class LocalCloud(Frozen):
    """VMs are agent processes on this machine."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    driver: Literal["local"]
    cores_per_vm: Annotated[int, Field(ge=1, le=256)] = 2
    min_vms: Annotated[int, Field(ge=0)] = 0
    max_vms: Annotated[int, Field(ge=0)] = 4
    cost_per_hour: Annotated[float, Field(ge=0)] = 0.0
    boot_s: Annotated[float, Field(ge=0)] = 2.0  # how long a VM takes to come up (simulator)
    aws_profile: str | None = Field(
        default=None,
        description="the AWS profile local agents run with, as an EC2 agent runs with its "
        "instance profile (default: the credentials of whoever starts the VM)",
    )

    @model_validator(mode="after")
    def _min_within_max(self) -> LocalCloud:
        return _check_vm_range(self)


class Ec2Cloud(Frozen):
    """VMs are EC2 instances booted from an AMI with the agent installed."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    driver: Literal["ec2"]
    ami: str
    instance_type: str | tuple[str, ...] = Field(
        default="c5.large",
        description="one type, or several of the same cores: tried in order while EC2 has no "
        "capacity for one",
    )
    cores_per_vm: Annotated[int, Field(ge=1, le=256)] = 2
    min_vms: Annotated[int, Field(ge=0)] = 0
    max_vms: Annotated[int, Field(ge=0)] = 10
    cost_per_hour: Annotated[float, Field(ge=0)] = 0.1
    boot_s: Annotated[float, Field(ge=0)] = 60.0
    spot: bool = False
    instance_profile: str | None = None
    subnet_id: str | tuple[str, ...] | None = Field(
        default=None,
        description="one subnet, or several (zones): tried in order while EC2 has no capacity",
    )
    security_group_ids: tuple[str, ...] = ()
    region: Region | None = None
    endpoint_url: HttpUrl | None = None
    install: Literal["image", "wheel"] = Field(
        default="image",
        description="image: the AMI has clobi (vm-image/clobi.pkr.hcl); wheel: cloud-init installs "
        "it at boot from a wheel the session uploads to S3, pinned by its sha256",
    )
    wheel: str | None = Field(
        default=None, description="the wheel to upload for install = 'wheel' (default: built)"
    )

    @model_validator(mode="after")
    def _min_within_max(self) -> Ec2Cloud:
        return _check_vm_range(self)

    def placements(self) -> list[tuple[str, str | None]]:
        """Where a VM may launch, (instance type, subnet) in the order to try."""
        types = (self.instance_type,) if isinstance(self.instance_type, str) else self.instance_type
        subnets: tuple[str | None, ...] = (
            (self.subnet_id,)
            if self.subnet_id is None or isinstance(self.subnet_id, str)
            else self.subnet_id
        )
        return [(kind, subnet) for kind in types for subnet in subnets]


def _check_vm_range(cloud: Any) -> Any:
    if cloud.min_vms > cloud.max_vms:
        raise ValueError(f"min_vms ({cloud.min_vms}) is above max_vms ({cloud.max_vms})")
    return cloud


CloudConfig = Annotated[LocalCloud | Ec2Cloud, Field(discriminator="driver")]


class AutoscaleConfig(Frozen):
    """The elastic pool policy: follow the queue, fill the cheap cloud first, never waste."""

    enabled: bool = False
    idle_timeout_s: Annotated[float, Field(ge=0)] = 300.0
    max_launches_per_min: Annotated[int, Field(ge=1)] = 20
    budget_per_hour: Annotated[float, Field(gt=0)] | None = None
    max_vm_lifetime_s: Annotated[float, Field(gt=0)] | None = None
    launch_backoff_s: Annotated[float, Field(gt=0)] = 60.0
    step_s: Annotated[float, Field(gt=0)] = 5.0


class SessionConfig(Frozen):
    """A session's config file, validated; unknown keys are errors."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    region: Region = "us-east-1"
    endpoint_url: EndpointUrl | None = None
    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")] = "clobi-sessions"
    priorities: Annotated[int, Field(ge=1, le=10)] = 3
    default_priority: Annotated[int, Field(ge=1, le=10)] = 1
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    lease_s: Annotated[float, Field(ge=2, le=3600)] = 60.0
    heartbeat_s: Annotated[float, Field(ge=0.2, le=600)] = 5.0
    dispatch_window: Annotated[int, Field(ge=1, le=10000)] = 64
    starvation_s: Annotated[float, Field(ge=1)] = 300.0
    vm_timeout_s: Annotated[float, Field(ge=2)] = 120.0
    # A sent job message not claimed within this is taken for lost (SQS may lose one) and sent
    # again by the Resource Manager; a duplicate only loses its claim.
    resend_s: Annotated[float, Field(ge=1)] = 300.0
    register_timeout_s: Annotated[float, Field(ge=2)] = 300.0
    log_ship_s: Annotated[float, Field(ge=0.5)] = 15.0
    max_log_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024**2
    job_user: Annotated[str, Field(pattern=USER_PATTERN)] | None = None
    releases: dict[str, ReleaseConfig] = {}
    clouds: tuple[CloudConfig, ...] = ()
    autoscale: AutoscaleConfig = AutoscaleConfig()

    @field_validator("default_priority")
    @classmethod
    def _default_within_priorities(cls, value: int, info: Any) -> int:
        priorities = info.data.get("priorities")
        if priorities is not None and value > priorities:
            raise ValueError(f"must be at most priorities ({priorities})")
        return value

    @field_validator("releases")
    @classmethod
    def _release_names(cls, releases: dict[str, ReleaseConfig]) -> dict[str, ReleaseConfig]:
        for name in releases:  # a release name is a path component on the VMs and in S3
            if not re.fullmatch(RELEASE_PATTERN, name):
                raise ValueError(f"{name!r} is no release name (letters, digits, '.', '_', '-')")
        return releases

    @field_validator("clouds")
    @classmethod
    def _unique_cloud_names(cls, clouds: tuple[CloudConfig, ...]) -> tuple[CloudConfig, ...]:
        names = [cloud.name for cloud in clouds]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two clouds are named {name!r}")
        return clouds

    @field_validator("heartbeat_s")
    @classmethod
    def _heartbeat_within_lease(cls, value: float, info: Any) -> float:
        lease = info.data.get("lease_s")
        if lease is not None and value * 3 > lease:
            raise ValueError(f"must be at most a third of lease_s ({lease})")
        return value

    def job_user_on(self, cloud: str) -> str | None:
        """The job user of a cloud's VMs: EC2 VMs always run jobs as slot users (their agent
        holds the unit's capabilities, which a job must never get near)."""
        if self.job_user is None and any(
            c.name == cloud and c.driver == "ec2" for c in self.clouds
        ):
            return EC2_JOB_USER
        return self.job_user

    def cloud(self, name: str) -> LocalCloud | Ec2Cloud:
        for cloud in self.clouds:
            if cloud.name == name:
                return cloud
        known = ", ".join(c.name for c in self.clouds) or "none"
        from shared.errors import ConfigError

        raise ConfigError(f"unknown cloud {name!r} (configured: {known})")


# --- the session file --------------------------------------------------------------------------


class AgentWheel(Frozen):
    """The clobi wheel a session uploaded for VMs that install clobi at boot."""

    key: str
    filename: str
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class SessionInfo(Frozen):
    """What a client or agent needs to reach a session. Holds no credentials."""

    id: str
    created_at: datetime
    region: str
    endpoint_url: str | None
    bucket: str
    prefix: str
    queue_urls: dict[str, str]  # "p1".."pN" and "dlq"
    tables: dict[str, str]  # "jobs", "vms", "events"
    releases: dict[str, str] = {}  # release name -> S3 key (dir and loop volumes)
    release_digests: dict[str, str] = {}  # release name -> sha256 of what was uploaded
    snapshots: dict[str, str] = {}  # release name -> EBS snapshot id (ebs volumes, EC2 VMs)
    agent_wheel: AgentWheel | None = None
    config: SessionConfig

    def queue_url(self, priority: int) -> str:
        return self.queue_urls[f"p{priority}"]

    def release_names(self) -> list[str]:
        """Every release jobs may name, whatever volume it mounts as."""
        return sorted(self.releases.keys() | self.snapshots.keys())


class Bootstrap(Frozen):
    """Everything an agent needs to start; given as a file or EC2 user-data. No credentials."""

    vm_id: str
    cloud: str
    cores: int
    session: SessionInfo
    workdir: str | None = None  # local VMs: their working area
