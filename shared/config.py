"""Reading session configs and job files (TOML), with one clear error line naming the key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

import pydantic

from shared.errors import ConfigError
from shared.models import JobSpec, SessionConfig

M = TypeVar("M", bound=pydantic.BaseModel)


def describe(err: pydantic.ValidationError, source: str) -> str:
    """The first problem of a pydantic error as one line: `source: key.path: what is wrong`."""
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"] if not _is_union_tag(part))
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    else:
        message = first["msg"]
        if "input" in first and first["type"] not in ("union_tag_invalid",):
            message += f" (got {first['input']!r})"
    more = len(err.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {where or '<top>'}: {message}{suffix}"


def _is_union_tag(part: Any) -> bool:
    return part in ("local", "ec2")


def parse(model: type[M], data: Any, source: str) -> M:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as err:
        raise ConfigError(describe(err, source)) from None


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None


def load_session_config(path: Path) -> SessionConfig:
    """Validate a session config; release archive paths are made relative to its folder."""
    data = read_toml(path)
    for release in (data.get("releases") or {}).values():
        if isinstance(release, dict):
            for key in ("archive", "image"):
                if isinstance(release.get(key), str):
                    release[key] = str((path.parent / release[key]).resolve())
    return parse(SessionConfig, data, str(path))


def load_job_file(path: Path) -> list[JobSpec]:
    """A job file: one or more [[job]] tables; script and input paths relative to the file."""
    data = read_toml(path)
    unknown = set(data) - {"job"}
    if unknown:
        raise ConfigError(f"{path}: {sorted(unknown)[0]}: unknown key (expected [[job]] tables)")
    jobs = data.get("job")
    if not isinstance(jobs, list) or not jobs:
        raise ConfigError(f"{path}: no [[job]] table")
    specs = []
    for index, job in enumerate(jobs):
        if not isinstance(job, dict):
            raise ConfigError(f"{path}: job.{index}: expected a table")
        job = dict(job)
        if isinstance(job.get("script"), str):
            job["script"] = str(path.parent / job["script"])
        if isinstance(job.get("inputs"), list):
            job["inputs"] = [
                str(path.parent / p) if isinstance(p, str) else p for p in job["inputs"]
            ]
        specs.append(parse(JobSpec, job, f"{path}: job.{index}"))
    return specs
