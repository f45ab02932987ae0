"""A bad job file (`clobi submit`) or job spec (the Python API) gets one clear error and
sends nothing, not even the good jobs beside it."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from jobmgmt.validate import MAX_JOBS_PER_SUBMIT, MAX_SANDBOX_BYTES, MAX_TASK_BYTES
from shared.errors import ClobiError
from tests.helpers import cli
from tests.reliability.bad_input import JOB, MAX_MEMBERS, Shared, assert_one_error_line, contents


def _link(work: Path) -> None:
    (work / "link.txt").symlink_to(work / "in.txt")


def _fifo(work: Path) -> None:
    os.mkfifo(work / "fifo")


def _huge_script(work: Path) -> None:
    with open(work / "huge.sh", "wb") as handle:  # sparse: big to stat, nothing on disk
        handle.truncate(MAX_SANDBOX_BYTES + 1)


BAD_JOBS: list[tuple[str, str, str, Callable[[Path], None] | None]] = [
    ("toml-syntax", "[[job]\nscript = 'a.sh'\n", "not valid TOML", None),
    ("empty-file", "", "no [[job]] table", None),
    ("job-not-an-array", '[job]\nscript = "a.sh"\n', "no [[job]] table", None),
    ("unknown-top-key", JOB + '[[jobs]]\nscript = "a.sh"\n', "jobs: unknown key", None),
    ("unknown-job-key", JOB + "walltme = 3\n", "job.0: walltme: unknown key", None),
    ("script-key-missing", "[[job]]\ncount = 2\n", "job.0: script: required key", None),
    ("count-zero", JOB + "count = 0\n", "job.0: count: ", None),
    ("count-negative", JOB + "count = -3\n", "job.0: count: ", None),
    ("count-huge", JOB + "count = 1_000_000_000\n", "job.0: count: ", None),
    (
        "count-total-huge",
        (JOB + f"count = {MAX_JOBS_PER_SUBMIT}\n") * 2,
        f"{2 * MAX_JOBS_PER_SUBMIT} jobs in one submit",
        None,
    ),
    ("count-not-a-number", JOB + 'count = "ten"\n', "job.0: count: ", None),
    ("name-control-char", JOB + 'name = "a\\nb"\n', "job.0: name: ", None),
    ("name-escape-sequence", JOB + 'name = "\\u001b[2J"\n', "job.0: name: ", None),
    ("priority-zero", JOB + "priority = 0\n", "job.0: priority: ", None),
    ("priority-above-session", JOB + "priority = 4\n", "priority 4 is out of range", None),
    ("priority-above-any", JOB + "priority = 11\n", "job.0: priority: ", None),
    ("release-unknown", JOB + 'release = "9.9"\n', "release '9.9' is not known", None),
    ("script-missing", '[[job]]\nscript = "nope.sh"\n', "nope.sh: no such file", None),
    ("script-empty", '[[job]]\nscript = ""\n', "not a regular file", None),
    ("script-too-big", '[[job]]\nscript = "huge.sh"\n', f"{MAX_SANDBOX_BYTES}", _huge_script),
    ("input-missing", JOB + 'inputs = ["nope.txt"]\n', "input ", None),
    ("input-a-link", JOB + 'inputs = ["link.txt"]\n', "link.txt: a link", _link),
    ("input-a-fifo", JOB + 'inputs = ["fifo"]\n', "fifo: not a regular file", _fifo),
    ("inputs-too-many", JOB + 'inputs = ["@MANY@"]\n', f"the limit is {MAX_MEMBERS}", None),
    ("inputs-same-name", JOB + 'inputs = ["in.txt", "d/in.txt"]\n', "same name", None),
    ("inputs-not-a-list", JOB + 'inputs = "in.txt"\n', "job.0: inputs: ", None),
    ("cores-above-largest-vm", JOB + "cores = 3\n", "3 cores asked", None),
    ("cores-zero", JOB + "cores = 0\n", "job.0: cores: ", None),
    ("walltime-zero", JOB + "walltime = 0\n", "job.0: walltime: ", None),
    ("walltime-negative", JOB + "walltime = -60\n", "job.0: walltime: ", None),
    ("max-attempts-zero", JOB + "max_attempts = 0\n", "job.0: max_attempts: ", None),
    ("name-too-long", JOB + f'name = "{"n" * 65}"\n', "job.0: name: ", None),
    ("env-not-a-table", JOB + 'env = "A=1"\n', "job.0: env: ", None),
    ("env-value-not-a-string", JOB + "env = { A = 1 }\n", "job.0: env.A: ", None),
    ("env-starts-with-digit", JOB + 'env = { "1X" = "y" }\n', "env '1X': not a valid", None),
    ("env-with-dash", JOB + 'env = { "A-B" = "y" }\n', "env 'A-B': not a valid", None),
    ("env-with-equals", JOB + 'env = { "A=B" = "y" }\n', "env 'A=B': not a valid", None),
    ("env-empty-name", JOB + 'env = { "" = "y" }\n', "env '': not a valid", None),
    ("env-not-ascii", JOB + 'env = { "É" = "y" }\n', "not a valid variable name", None),
    ("env-clobi", JOB + 'env = { CLOBI_JOB_ID = "x" }\n', "CLOBI_JOB_ID': CLOBI_*", None),
    ("env-aws-key", JOB + 'env = { AWS_ACCESS_KEY_ID = "x" }\n', "reserved", None),
    ("env-aws-endpoint", JOB + 'env = { AWS_ENDPOINT_URL = "x" }\n', "reserved", None),
    ("env-nul", JOB + 'env = { A = "x\\u0000y" }\n', "env 'A': the value holds a NUL", None),
    ("args-nul", JOB + 'args = ["x\\u0000y"]\n', "NUL", None),
    ("args-not-strings", JOB + "args = [1, 2]\n", "job.0: args.0: ", None),
    ("output-dot-dot", JOB + 'outputs = ["../x"]\n', "output pattern '../x'", None),
    ("output-inner-dot-dot", JOB + 'outputs = ["a/../../x"]\n', "'a/../../x'", None),
    ("output-absolute", JOB + 'outputs = ["/etc/passwd"]\n', "'/etc/passwd'", None),
    ("output-empty", JOB + 'outputs = [""]\n', "output pattern ''", None),
    (
        "env-too-big",
        JOB + f'env = {{ BIG = "{"x" * MAX_TASK_BYTES}" }}\n',
        f"the limit is {MAX_TASK_BYTES}",
        None,
    ),
    (
        "args-too-big",
        JOB + f"args = {json.dumps(['x' * 1000] * 70)}\n",
        f"the limit is {MAX_TASK_BYTES}",
        None,
    ),
    (
        "outputs-too-many",
        JOB + f"outputs = {json.dumps([f'out-{i}.root' for i in range(6000)])}\n",
        f"the limit is {MAX_TASK_BYTES}",
        None,
    ),
    ("second-job-bad", JOB + JOB + "count = 0\n", "job.1: count: ", None),
    ("second-job-bad-input", JOB + JOB + 'inputs = ["nope"]\n', "input ", None),
    ("second-job-bad-env", JOB + JOB + 'env = { AWS_PROFILE = "x" }\n', "reserved", None),
]


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of as many files as a sandbox may hold: with the script, one too many."""
    many = tmp_path_factory.mktemp("many")
    for index in range(MAX_MEMBERS):
        (many / str(index)).touch()
    return many


@pytest.mark.parametrize(
    ("text", "expected", "setup"), [c[1:] for c in BAD_JOBS], ids=[c[0] for c in BAD_JOBS]
)
def test_submit_refuses_a_bad_job_file_in_one_line_and_sends_nothing(
    work: Path,
    many: Path,
    shared: Shared,
    endpoint: str,
    text: str,
    expected: str,
    setup: Callable[[Path], None] | None,
) -> None:
    if setup:
        setup(work)
    jobs = work / "jobs.toml"
    jobs.write_text(text.replace("@MANY@", str(many)))
    before = contents(endpoint)
    assert_one_error_line(cli("submit", str(jobs), *shared.arg), expected)
    assert contents(endpoint) == before


def test_a_job_file_that_cannot_be_read_is_one_line(work: Path, shared: Shared) -> None:
    for jobs, expected in [
        (work / "none.toml", "none.toml: no such file"),
        (work / "d", "cannot read"),
    ]:
        assert_one_error_line(cli("submit", str(jobs), *shared.arg), expected)


def _spec(work: Path, **fields: Any) -> JobSpec:
    return JobSpec(script=str(work / "a.sh"), **fields)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"env": {"AWS_SECRET_ACCESS_KEY": "x"}}, "reserved"),
        ({"env": {"BIG": "x" * MAX_TASK_BYTES}}, f"the limit is {MAX_TASK_BYTES}"),
        ({"args": ("x" * MAX_TASK_BYTES,)}, f"the limit is {MAX_TASK_BYTES}"),
        ({"outputs": ("/abs/*.root",)}, "must be relative"),
        ({"priority": 7}, "priority 7 is out of range"),
        ({"release": "14.2.10"}, "not known to the session"),
        ({"cores": 64}, "64 cores asked"),
        ({"inputs": ("nope.txt",)}, "input nope.txt"),
        ({"count": MAX_JOBS_PER_SUBMIT, "name": "big"}, "jobs in one submit"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_the_api_refuses_a_bad_spec_and_sends_nothing_even_for_the_good_ones(
    work: Path, shared: Shared, endpoint: str, fields: dict[str, Any], expected: str
) -> None:
    client = JobClient(shared.session)
    before = contents(endpoint)
    good = _spec(work, count=3)
    with pytest.raises(ClobiError, match=re.escape(expected)) as err:
        client.submit([good, _spec(work, **fields)])
    assert "\n" not in str(err.value)
    assert contents(endpoint) == before


@pytest.mark.parametrize(
    "fields",
    [{"count": 0}, {"count": 10**9}, {"walltime": 0}, {"priority": 0}, {"cores": 0}, {"x": 1}],
    ids=lambda v: f"{next(iter(v))}={next(iter(v.values()))}",
)
def test_a_job_spec_refuses_values_out_of_range_when_built(
    work: Path, fields: dict[str, Any]
) -> None:
    with pytest.raises(pydantic.ValidationError):
        _spec(work, **fields)
