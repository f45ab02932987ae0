"""Reading session configs and job files (TOML), with one clear error line naming the key."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import pydantic

from shared.errors import ConfigError
from shared.models import PATTERN_MEANING, Ec2Cloud, SessionConfig
from shared.records import JobSpec

M = TypeVar("M", bound=pydantic.BaseModel)


def describe(err: pydantic.ValidationError, source: str) -> str:
    """The first problem of a pydantic error as one line: `source: key.path: what is wrong`."""
    first = err.errors()[0]
    loc = first["loc"]
    # A cloud's errors are located as clouds.0.<driver>.key: the driver tag is no key.
    where = ".".join(str(part) for i, part in enumerate(loc) if not (i == 2 and loc[0] == "clouds"))
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        where += "." + str(first.get("ctx", {}).get("discriminator", "")).strip("'")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] in ("missing", "union_tag_not_found"):
        message = "required key is missing"
    else:
        message = first["msg"].removeprefix("Value error, ")
        pattern = str(first.get("ctx", {}).get("pattern", ""))
        if first["type"] == "string_pattern_mismatch" and pattern in PATTERN_MEANING:
            message = f"should be {PATTERN_MEANING[pattern]}"
        value = first.get("input")
        if "input" in first and first["type"] != "union_tag_invalid":
            # the whole table as "got" would hide the problem in a long line
            message += "" if isinstance(value, dict | list) else f" (got {_short(value)})"
    more = len(err.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {where or '<top>'}: {message}{suffix}"


def _short(value: Any) -> str:
    """A value for an error line: its repr, cut so that a huge one keeps the line readable."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 (byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None


def load_session_config(path: Path, check_files: bool = True) -> SessionConfig:
    """Validate a session config. The files it names (release archives and images, a wheel)
    are relative to its folder and, with `check_files`, must exist."""
    data = read_toml(path)
    for section, keys in (("releases", ("archive", "image")), ("clouds", ("wheel",))):
        for entry in _entries(data.get(section)):
            for key in keys:
                if isinstance(entry.get(key), str):
                    entry[key] = str((path.parent / entry[key]).resolve())
    config = parse(SessionConfig, data, str(path))
    if check_files:
        for where, file in _files(config):
            if not Path(file).is_file():
                raise ConfigError(f"{path}: {where}: {file} does not exist")
    return config


def _entries(section: Any) -> list[dict[str, Any]]:
    """The tables of a `[releases.*]` or `[[clouds]]` section, whatever its shape."""
    values = section.values() if isinstance(section, dict) else section
    return [v for v in values if isinstance(v, dict)] if isinstance(values, Iterable) else []


def _files(config: SessionConfig) -> list[tuple[str, str]]:
    found = [
        (f"releases.{name}.{key}", file)
        for name, release in config.releases.items()
        for key, file in (("archive", release.archive), ("image", release.image))
        if file
    ]
    found += [
        (f"clouds.{i}.wheel", cloud.wheel)
        for i, cloud in enumerate(config.clouds)
        if isinstance(cloud, Ec2Cloud) and cloud.wheel
    ]
    return found


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
