"""The one place that names AWS resources, S3 keys, tags and ids for a session."""

from __future__ import annotations

import hashlib
import re
import secrets

from shared.timeutil import utcnow

PREFIX = "clobi"
TAG_SESSION = "clobi:session"
TAG_VM = "clobi:vm"
TAG_RELEASE = "clobi:release"  # on an EBS release volume: the release it holds
TABLE_KINDS = ("jobs", "vms", "events")


def new_session_id(name: str) -> str:
    """`<name>-<YYMMDD-HHMM>-<4 hex>`: sortable, unique, short enough for every AWS name."""
    return f"{name}-{utcnow():%y%m%d-%H%M}-{secrets.token_hex(2)}"


def queue_name(session_id: str, priority: int) -> str:
    return f"{PREFIX}-{session_id}-p{priority}"


def dlq_name(session_id: str) -> str:
    return f"{PREFIX}-{session_id}-dlq"


def table_name(session_id: str, kind: str) -> str:
    return f"{PREFIX}-{session_id}-{kind}"


def session_prefix(session_id: str) -> str:
    return f"sessions/{session_id}/"


IMAGE_SUFFIX = ".img"


def release_key(prefix: str, release: str, image: bool = False) -> str:
    """Where a release lives: an archive (`dir` volumes) or a filesystem image (`loop`)."""
    return f"{prefix}releases/{release}{IMAGE_SUFFIX if image else '.tar.gz'}"


def wheel_key(prefix: str, filename: str) -> str:
    """The clobi wheel VMs install at boot when their cloud says `install = "wheel"`."""
    return f"{prefix}dist/{filename}"


def sandbox_key(prefix: str, digest: str) -> str:
    """Input sandboxes are content-addressed: identical archives are stored once."""
    return f"{prefix}sandboxes/{digest}.tar.gz"


def attempt_prefix(prefix: str, job_id: str, attempt: int) -> str:
    """Outputs go under a per-attempt key so a superseded attempt never overwrites the result."""
    return f"{prefix}jobs/{job_id}/{attempt}/"


RESULT_ARCHIVE = "result.tar.gz"  # stdout, stderr and the outputs of an attempt


def agent_log_key(prefix: str, vm_id: str) -> str:
    return f"{prefix}logs/{vm_id}.log"


def new_vm_id(cloud: str) -> str:
    return f"vm-{cloud}-{secrets.token_hex(3)}"


def batch_id(session_id: str, token: str | None) -> str:
    """The cluster part of job ids: from the token, so a repeated submit gets the same ids."""
    if token is None:
        return secrets.token_hex(4)
    return hashlib.sha256(f"{session_id}\0{token}".encode()).hexdigest()[:8]


def job_id(batch: str, index: int) -> str:
    """`<batch>.<index>`, like HTCondor's cluster.proc."""
    return f"{batch}.{index}"


JOB_ID = re.compile(r"[0-9A-Za-z_-]{1,64}\.[0-9]{1,9}")


def is_job_id(text: str) -> bool:
    """Whether `text` has the shape of a job id (and so may be looked up at all)."""
    return JOB_ID.fullmatch(text) is not None
