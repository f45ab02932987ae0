"""Checks on a job spec before anything is sent: one clear line per problem."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from shared.errors import ValidationError
from shared.models import JobSpec, SessionInfo

MAX_SANDBOX_BYTES = 256 * 1024**2
MAX_ENV_BYTES = 64 * 1024


def validate(spec: JobSpec, info: SessionInfo) -> None:
    config = info.config
    script = Path(spec.script)
    if not script.is_file():
        raise ValidationError(f"script {spec.script}: no such file")
    total = script.stat().st_size
    for path in spec.inputs:
        if not Path(path).exists():
            raise ValidationError(f"input {path}: no such file or directory")
        total += _size(Path(path))
    if total > MAX_SANDBOX_BYTES:
        raise ValidationError(
            f"inputs of {spec.script} are {total} bytes; the limit is "
            f"{MAX_SANDBOX_BYTES} (put big data in S3 or a release)"
        )
    names = [script.name] + [Path(p).name for p in spec.inputs]
    if len(set(names)) != len(names):
        raise ValidationError(f"two inputs of {spec.script} have the same name")
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
    for pattern in spec.outputs:
        parts = PurePosixPath(pattern).parts
        if not pattern or pattern.startswith("/") or ".." in parts:
            raise ValidationError(f"output pattern {pattern!r}: must be relative, without '..'")
    for key in spec.env:
        if not key.isidentifier() or key.startswith("CLOBI_"):
            raise ValidationError(f"env {key!r}: not a valid variable name (or reserved CLOBI_)")
    if sum(len(k) + len(v) for k, v in spec.env.items()) > MAX_ENV_BYTES:
        raise ValidationError(f"env of {spec.script} is larger than {MAX_ENV_BYTES} bytes")
    cores_max = max((c.cores_per_vm for c in config.clouds), default=spec.cores)
    if spec.cores > cores_max:
        raise ValidationError(
            f"{spec.cores} cores asked, but the largest VM of the session has {cores_max}"
        )


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(Path(d, f).stat().st_size for d, _, files in os.walk(path) for f in files)
