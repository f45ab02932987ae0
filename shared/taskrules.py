"""What a job's task may hold: checked where it is made (the submitter, one clear line) and
again where it runs (the agent, which trusts no id, path or name it reads from a table or a
queue: anyone able to write a job item would otherwise steer a privileged process)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from shared import naming
from shared.message import MAX_ATTEMPTS, MAX_CORES
from shared.models import SessionInfo
from shared.records import JobTask

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED_ENV = ("CLOBI_", "AWS_")  # set by the agent; AWS_* would redirect its credentials
SCRIPT_NAME = re.compile(r"[^/\x00-\x1f\x7f]{1,255}")  # a plain file name of the sandbox
SANDBOX_NAME = re.compile(r"sandboxes/([0-9a-f]{64})\.tar\.gz")  # content-addressed


def output_problem(pattern: str) -> str | None:
    parts = PurePosixPath(pattern).parts
    if not pattern or pattern.startswith("/") or ".." in parts or "\0" in pattern:
        return f"output pattern {pattern[:64]!r}: must be relative, without '..'"
    return None


def env_problem(key: str, value: str) -> str | None:
    if not ENV_NAME.fullmatch(key):
        return f"env {key[:64]!r}: not a valid variable name"
    if key.upper().startswith(RESERVED_ENV):
        return f"env {key!r}: CLOBI_* and AWS_* variables are reserved"
    if "\0" in value:
        return f"env {key!r}: the value holds a NUL character"
    return None


def sandbox_digest(key: str, prefix: str) -> str | None:
    """The sha256 an input sandbox key names, if it is one of the session's; else None."""
    if not key.startswith(prefix):
        return None
    match = SANDBOX_NAME.fullmatch(key[len(prefix) :])
    return match.group(1) if match else None


def task_problem(task: JobTask, info: SessionInfo) -> str | None:
    """What is wrong with a task an agent claimed, in one line; None if nothing."""
    if not naming.is_job_id(task.id):
        return f"job id {task.id[:80]!r} is not a job id"
    if task.script in (".", "..") or not SCRIPT_NAME.fullmatch(task.script):
        return f"script {task.script[:80]!r} is not a plain file name"
    if sandbox_digest(task.sandbox_key, info.prefix) is None:
        return f"sandbox {task.sandbox_key[:200]!r} is not an input sandbox of the session"
    if task.release is not None and task.release not in info.release_names():
        return f"release {task.release[:80]!r} is not a release of the session"
    if not 1 <= task.attempt <= task.max_attempts <= MAX_ATTEMPTS:
        return f"attempt {task.attempt} of {task.max_attempts} is out of range"
    if not 1 <= task.cores <= MAX_CORES or (task.walltime is not None and task.walltime < 1):
        return f"cores {task.cores} or walltime {task.walltime} out of range"
    if not 1 <= task.priority <= info.config.priorities:
        return f"priority {task.priority} out of range"
    for pattern in task.outputs:
        if problem := output_problem(pattern):
            return problem
    for key, value in task.env.items():
        if problem := env_problem(key, value):
            return problem
    if any("\0" in arg for arg in task.args):
        return "an argument holds a NUL character"
    return None
