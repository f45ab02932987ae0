"""Checks on a job spec before anything is sent: one clear line per problem."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from shared.errors import ValidationError
from shared.models import SessionInfo
from shared.records import JobSpec
from shared.sandbox import INPUT_LIMITS
from shared.taskrules import SCRIPT_NAME, env_problem, output_problem

MAX_SANDBOX_BYTES = INPUT_LIMITS.max_total_bytes
# env, args and outputs travel in the job item: DynamoDB holds 400 KB an item and 4 MB a
# transaction (jobs are created 50 a transaction), so a spec's share stays far below both.
MAX_TASK_BYTES = 64 * 1024
MAX_JOBS_PER_SUBMIT = 100_000


def validate_all(specs: Sequence[JobSpec], info: SessionInfo) -> None:
    """Every spec of one submit, and their total count."""
    for spec in specs:
        validate(spec, info)
    total = sum(spec.count for spec in specs)
    if total > MAX_JOBS_PER_SUBMIT:
        raise ValidationError(
            f"{total} jobs in one submit; the limit is {MAX_JOBS_PER_SUBMIT} (submit in parts)"
        )


def validate(spec: JobSpec, info: SessionInfo) -> None:
    config = info.config
    _check_sandbox(spec)
    priority = spec.priority or config.default_priority
    if not 1 <= priority <= config.priorities:
        raise ValidationError(
            f"priority {priority} is out of range: this session has "
            f"priorities 1..{config.priorities}"
        )
    if spec.release is not None and spec.release not in info.release_names():
        known = ", ".join(info.release_names()) or "none"
        raise ValidationError(
            f"release {spec.release!r} is not known to the session (known: {known})"
        )
    cores_max = max((c.cores_per_vm for c in config.clouds), default=spec.cores)
    if spec.cores > cores_max:
        raise ValidationError(
            f"{spec.cores} cores asked, but the largest VM of the session has {cores_max}"
        )
    _check_task(spec)


def _check_sandbox(spec: JobSpec) -> None:
    """Script and inputs: regular files and directories only (as `sandbox.pack` takes them),
    within the size and member limits the agent extracts with."""
    script = Path(spec.script)
    if not script.is_file() or script.is_symlink():
        what = "no such file" if not script.exists() else "not a regular file (or a link)"
        raise ValidationError(f"script {spec.script}: {what}")
    if not os.access(script, os.R_OK):
        raise ValidationError(f"script {spec.script}: not readable")
    total, members = script.stat().st_size, 1
    for path in spec.inputs:
        if not os.path.lexists(path):
            raise ValidationError(f"input {path}: no such file or directory")
        size, count = _measure(Path(path))
        total, members = total + size, members + count
    if total > MAX_SANDBOX_BYTES:
        raise ValidationError(
            f"inputs of {spec.script} are {total} bytes; the limit is "
            f"{MAX_SANDBOX_BYTES} (put big data in S3 or a release)"
        )
    if members > INPUT_LIMITS.max_members:
        raise ValidationError(
            f"inputs of {spec.script} hold {members} files and directories; the limit is "
            f"{INPUT_LIMITS.max_members} (pack them into an archive)"
        )
    names = [script.name] + [Path(p).name for p in spec.inputs]
    if len(set(names)) != len(names):
        raise ValidationError(f"two inputs of {spec.script} have the same name")


def _measure(path: Path) -> tuple[int, int]:
    """Bytes and archive members of one input; links and special files are refused."""
    mode = path.lstat().st_mode
    if stat.S_ISREG(mode):
        if not os.access(path, os.R_OK):
            raise ValidationError(f"input {path}: not readable")
        return path.stat().st_size, 1
    if not stat.S_ISDIR(mode):
        kind = "a link" if stat.S_ISLNK(mode) else "not a regular file or directory"
        raise ValidationError(f"input {path}: {kind} (a sandbox holds files and directories)")
    total, members = 0, 1
    for child in path.iterdir():
        size, count = _measure(child)
        total, members = total + size, members + count
    return total, members


def _check_task(spec: JobSpec) -> None:
    """What goes into the job item: outputs, env and args."""
    name = Path(spec.script).name
    if name in (".", "..") or not SCRIPT_NAME.fullmatch(name):
        raise ValidationError(f"script {name[:80]!r}: not a plain file name")
    problems = [output_problem(pattern) for pattern in spec.outputs]
    problems += [env_problem(key, value) for key, value in spec.env.items()]
    for problem in problems:
        if problem:
            raise ValidationError(problem)
    if any("\0" in arg for arg in spec.args):
        raise ValidationError(f"args of {spec.script}: an argument holds a NUL character")
    size = len(json.dumps([spec.env, spec.args, spec.outputs, spec.name]).encode())
    if size > MAX_TASK_BYTES:
        raise ValidationError(
            f"env, args and outputs of {spec.script} take {size} bytes; the limit is "
            f"{MAX_TASK_BYTES} (a job must fit in a DynamoDB item: put big data in an input file)"
        )
