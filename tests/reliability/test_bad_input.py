"""Bad input at every entry point gets one clear error, a non-zero exit, and changes nothing.

Session configs (`clobi session create`), job files and specs (`clobi submit`, the Python API),
command-line arguments, and sandbox archives (shared.sandbox.extract, as the agent extracts an
input sandbox and `clobi fetch` a result). Members with setuid/setgid bits are refused, not
stripped: clobi never packs one, so an archive holding one was crafted.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pydantic
import pytest

from jobmgmt import JobSpec
from jobmgmt.client import JobClient
from jobmgmt.validate import MAX_JOBS_PER_SUBMIT, MAX_SANDBOX_BYTES, MAX_TASK_BYTES
from resource_manager.lifecycle import create_session
from shared import naming, sandbox, sessionfile
from shared.aws import Aws
from shared.errors import ClobiError, SandboxError
from shared.home import private_dir
from shared.models import LocalCloud, SessionConfig
from shared.records import JobState
from shared.session import Session
from shared.transitions import Outcome
from tests.faults.state import lose_state
from tests.helpers import Result, cli

MAX_MEMBERS = sandbox.DEFAULT_LIMITS.max_members


@dataclass(frozen=True)
class Shared:
    session: Session
    file: str  # its session file: `--session FILE` finds it whatever $CLOBI_HOME a test has

    @property
    def arg(self) -> list[str]:
        return ["--session", self.file]


@pytest.fixture(scope="module")
def shared(endpoint: str, endpoint_keys: Path, tmp_path_factory: pytest.TempPathFactory) -> Shared:
    """One session for the module (a fresh one a test would cost seconds): priorities 1..3,
    local VMs of 2 cores, no release, and one queued job named `keep`. Every test checks that
    the endpoint holds the same before and after, so they may share it."""
    home = tmp_path_factory.mktemp("bad-input")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLOBI_HOME", str(home / "clobi-home"))
        private_dir(home / "clobi-home" / "local")
        shutil.copy(endpoint_keys, home / "clobi-home" / "local" / "credentials")
        lose_state(endpoint)
        config = SessionConfig(
            name="bad",
            endpoint_url=endpoint,
            clouds=(LocalCloud(name="local", driver="local", cores_per_vm=2, max_vms=4),),
        )
        session = Session(create_session(config))
        file = str(sessionfile.path_for(session.id))
        script = home / "a.sh"
        script.write_text("true\n")
        JobClient(session).submit(JobSpec(script=str(script), name="keep"))
    return Shared(session, file)


# --- what "changes nothing" means -----------------------------------------------------------


@cache
def _aws(endpoint: str) -> Aws:
    return Aws("us-east-1", endpoint)


def contents(endpoint: str) -> dict[str, Any]:
    """Everything on the endpoint: queues with their message counts, tables with their item
    counts, S3 objects."""
    aws = _aws(endpoint)
    queues = {}
    for url in aws.sqs.list_queues().get("QueueUrls", []):
        attributes = aws.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        queues[url] = sorted(attributes.items())
    tables = {
        name: aws.ddb.scan(TableName=name, Select="COUNT")["Count"]
        for name in aws.ddb.list_tables()["TableNames"]
    }
    objects = {
        bucket["Name"]: sorted(
            o["Key"] for o in aws.s3.list_objects_v2(Bucket=bucket["Name"]).get("Contents", [])
        )
        for bucket in aws.s3.list_buckets()["Buckets"]
    }
    return {"queues": queues, "tables": tables, "objects": objects}


def tree(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int, bytes]]:
    """Every path under root with its type, size and content; but `skip`, what is under it
    and the folders on its way (extraction may create those)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if skip is not None and (here == skip or skip in here.parents):
            continue
        for name in dirnames + filenames:
            path = here / name
            if skip is not None and (path == skip or path in skip.parents):
                continue
            info = path.lstat()
            data = path.read_bytes() if stat.S_ISREG(info.st_mode) else b""
            found[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode), info.st_size, data)
    return found


def assert_one_error_line(result: Result, *expected: str) -> None:
    """Exit status 1, nothing on stdout, one `clobi: error:` line holding every `expected`."""
    assert result.code == 1, result
    assert "Traceback" not in result.err, result.err
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("clobi: error: "), result.err
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert result.out == "", result.out


def assert_usage_error(result: Result) -> None:
    """argparse's way: exit status 2, the usage and one `clobi ...: error:` line last."""
    assert result.code == 2, result
    assert "Traceback" not in result.err, result.err
    assert result.out == ""
    last = result.err.splitlines()[-1]
    assert re.match(r"^clobi( [\w-]+)*: error: ", last), result.err


# --- session configs ------------------------------------------------------------------------

HEAD = 'name = "bad"\nendpoint_url = "@ENDPOINT@"\n'
LOCAL = '[[clouds]]\nname = "l"\ndriver = "local"\n'
EC2 = '[[clouds]]\nname = "e"\ndriver = "ec2"\nami = "ami-1"\n'

BAD_CONFIGS: list[tuple[str, str | bytes, str]] = [
    ("toml-syntax", HEAD + "priorities = \n", "not valid TOML"),
    ("toml-unclosed-string", 'name = "bad\n', "not valid TOML"),
    ("not-utf8", HEAD.encode() + b'region = "\xff"\n', "not UTF-8"),
    ("unknown-key", HEAD + "priorites = 3\n", "priorites: unknown key"),
    ("unknown-key-in-cloud", HEAD + LOCAL + "cores = 2\n", "clouds.0.cores: unknown key"),
    ("unknown-section", HEAD + "[autoscaling]\nenabled = true\n", "autoscaling: unknown key"),
    ("wrong-type", HEAD + 'priorities = "many"\n', "priorities: "),
    ("wrong-type-in-cloud", HEAD + LOCAL + 'max_vms = "four"\n', "clouds.0.max_vms: "),
    ("wrong-type-releases", HEAD + 'releases = "14.2.10"\n', "releases: "),
    ("wrong-type-clouds", HEAD + "clouds = [1]\n", "clouds.0: "),
    ("priorities-zero", HEAD + "priorities = 0\n", "priorities: "),
    ("priorities-too-many", HEAD + "priorities = 11\n", "priorities: "),
    ("default-priority-above", HEAD + "priorities = 2\ndefault_priority = 3\n", "default_priority"),
    ("lease-too-short", HEAD + "lease_s = 1\n", "lease_s: "),
    ("heartbeat-vs-lease", HEAD + "lease_s = 10\nheartbeat_s = 5\n", "heartbeat_s: "),
    ("max-attempts-zero", HEAD + "max_attempts = 0\n", "max_attempts: "),
    ("cores-zero", HEAD + LOCAL + "cores_per_vm = 0\n", "clouds.0.cores_per_vm: "),
    ("max-vms-negative", HEAD + LOCAL + "max_vms = -1\n", "clouds.0.max_vms: "),
    ("min-above-max", HEAD + LOCAL + "min_vms = 5\nmax_vms = 2\n", "clouds.0: min_vms"),
    ("duplicate-cloud-names", HEAD + LOCAL + LOCAL, "two clouds are named 'l'"),
    ("unknown-driver", HEAD + '[[clouds]]\nname = "g"\ndriver = "gcp"\n', "clouds.0.driver: "),
    ("driver-missing", HEAD + '[[clouds]]\nname = "g"\n', "clouds.0.driver: required"),
    ("cloud-name", HEAD + '[[clouds]]\nname = "My Cloud"\ndriver = "local"\n', "clouds.0.name"),
    ("ec2-without-ami", HEAD + '[[clouds]]\nname = "e"\ndriver = "ec2"\n', "clouds.0.ami: "),
    ("ec2-bad-install", HEAD + EC2 + 'install = "pip"\n', "clouds.0.install: "),
    ("ec2-bad-region", HEAD + EC2 + 'region = "mars"\n', "clouds.0.region: "),
    ("ec2-wheel-missing", HEAD + EC2 + 'install = "wheel"\nwheel = "no.whl"\n', "clouds.0.wheel"),
    ("ec2-endpoint-local", HEAD + EC2 + 'endpoint_url = "local"\n', "clouds.0.endpoint_url: "),
    (
        "release-name-path",
        HEAD + '[releases."../../x"]\nsnapshot = "snap-1234abcd"\n',
        "releases: ",
    ),
    ("release-name-slash", HEAD + '[releases."a/b"]\nsnapshot = "snap-1234abcd"\n', "'a/b'"),
    (
        "release-archive-missing",
        HEAD + '[releases."14.2.10"]\narchive = "no-such.tar.gz"\n',
        "releases.14.2.10.archive: ",
    ),
    (
        "release-image-missing",
        HEAD + '[releases."14.2.10"]\nimage = "no-such.img"\n',
        "releases.14.2.10.image: ",
    ),
    ("release-no-source", HEAD + '[releases."r1"]\n', "releases.r1: "),
    (
        "release-archive-and-image",
        HEAD + '[releases."r1"]\narchive = "a.tgz"\nimage = "a.img"\n',
        "releases.r1: ",
    ),
    (
        "release-bad-snapshot",
        HEAD + '[releases."r1"]\nsnapshot = "snap-xyz"\n',
        "releases.r1.snapshot: ",
    ),
    ("release-unknown-key", HEAD + '[releases."r1"]\nsnap = "snap-1234abcd"\n', "r1.snap: "),
    ("name-missing", 'endpoint_url = "@ENDPOINT@"\n', "name: required key is missing"),
    ("name-uppercase", HEAD.replace("bad", "Bad"), "name: "),
    ("name-too-long", HEAD.replace("bad", "b" * 30), "name: "),
    ("bucket-name", HEAD + 'bucket = "My_Bucket"\n', "bucket: "),
    ("endpoint-not-a-url", 'name = "bad"\nendpoint_url = "not a url"\n', "endpoint_url: "),
    ("endpoint-scheme", 'name = "bad"\nendpoint_url = "ftp://127.0.0.1:1"\n', "endpoint_url: "),
    ("region", HEAD + 'region = "us east 1"\n', "region: "),
    ("autoscale-negative", HEAD + "[autoscale]\nidle_timeout_s = -1\n", "autoscale.idle_timeout_s"),
    ("job-user-shell", HEAD + 'job_user = "nobody; rm -rf /"\n', "job_user: "),
    ("job-user-empty", HEAD + 'job_user = ""\n', "job_user: "),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_session_create_refuses_a_bad_config_in_one_line_and_creates_nothing(
    tmp_path: Path, endpoint: str, clobi_home: Path, text: str | bytes, expected: str
) -> None:
    config = tmp_path / "session.toml"
    if isinstance(text, bytes):
        config.write_bytes(text)
    else:
        config.write_text(text.replace("@ENDPOINT@", endpoint))
    (tmp_path / "a.tgz").write_bytes(b"")
    (tmp_path / "a.img").write_bytes(b"")
    before = contents(endpoint)
    result = cli("session", "create", str(config))
    assert_one_error_line(result, f"clobi: error: {config}: ", expected)
    assert contents(endpoint) == before
    assert not list(clobi_home.glob("sessions/*.json"))


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_session_create_of_an_unreadable_config_is_one_line(
    tmp_path: Path, endpoint: str, what: str
) -> None:
    config = tmp_path / "session.toml"
    if what == "directory":
        config.mkdir()
    before = contents(endpoint)
    assert_one_error_line(cli("session", "create", str(config)), str(config))
    assert contents(endpoint) == before


# --- job files and specs --------------------------------------------------------------------

JOB = '[[job]]\nscript = "a.sh"\n'


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


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder with a script, an input file and a directory holding another `in.txt`."""
    work = tmp_path / "work"
    (work / "d").mkdir(parents=True)
    (work / "a.sh").write_text("#!/bin/bash\necho hi\n")
    (work / "in.txt").write_text("input\n")
    (work / "d" / "in.txt").write_text("another\n")
    return work


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


# --- command-line arguments -----------------------------------------------------------------

USAGE_ERRORS: list[list[str]] = [
    [],
    ["frobnicate"],
    ["--session"],
    ["submit", "--bogus"],
    ["submit", "--script", "a.sh", "--count", "ten"],
    ["submit", "--script", "a.sh", "--cores", "1.5"],
    ["wait", "--timeout", "-1"],
    ["wait", "--timeout", "nan"],
    ["wait", "--timeout", "soon"],
    ["status", "--state", "bogus"],
    ["cancel", "--state", "succeeded"],
    ["events"],
    ["logs"],
    ["logs", "a.0", "b.0"],
    ["session"],
    ["session", "create"],
    ["session", "frobnicate"],
    ["vm", "start"],
    ["vm", "start", "local", "-n", "some"],
    ["vm", "drain"],
    ["vm", "kill"],
    ["autoscale", "maybe"],
    ["rm", "--interval", "0"],
    ["rm", "--interval", "-5"],
    ["local", "up", "--port", "70000"],
    ["local", "up", "--port", "-1"],
    ["simulate", "--trace", "t.csv"],
]


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=" ".join)
def test_malformed_arguments_are_usage_errors(args: list[str]) -> None:
    assert_usage_error(cli(*args))


UNKNOWN = "0123abcd.7"
MALFORMED_IDS = ["", "abc", "../../etc/passwd", "a b.0", "abc.0\n", "x" * 5000 + ".0", "É.0"]
JOB_COMMANDS = [["status"], ["wait", "--timeout", "0"], ["cancel"], ["fetch"], ["logs"], ["events"]]


@pytest.mark.parametrize("command", JOB_COMMANDS, ids=lambda c: c[0])
def test_unknown_and_malformed_job_ids_are_one_line_for_every_job_command(
    tmp_path: Path,
    shared: Shared,
    endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # where `fetch` would write
    (known,) = JobClient(shared.session).status(name="keep")
    sid = shared.arg
    before = contents(endpoint)
    assert_one_error_line(cli(*command, UNKNOWN, *sid), f"no job {UNKNOWN} in session")
    for job_id in MALFORMED_IDS:
        assert_one_error_line(cli(*command, job_id, *sid), "malformed job id")
    if command[0] != "logs":  # known first, then unknown: nothing is done for the known one
        assert_one_error_line(cli(*command, known.id, UNKNOWN, *sid), f"no job {UNKNOWN}")
    assert contents(endpoint) == before
    assert not (tmp_path / known.id).exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["submit", "--script", "a.sh", "--count", "0"], "arguments: count: "),
        (["submit", "--script", "a.sh", "--count", "-1"], "arguments: count: "),
        (["submit", "--script", "a.sh", "--priority", "9"], "priority 9 is out of range"),
        (["submit", "--script", "a.sh", "--walltime", "0"], "arguments: walltime: "),
        (["submit", "--script", "a.sh", "--cores", "0"], "arguments: cores: "),
        (["submit", "--script", "a.sh", "--max-attempts", "0"], "arguments: max_attempts: "),
        (["submit", "--script", "a.sh", "--output", "../up"], "output pattern '../up'"),
        (["submit", "--script", "a.sh", "--input", "nope"], "input nope"),
        (["submit", "--script", "a.sh", "--release", "9.9"], "release '9.9'"),
        (["submit", "--script", "nope.sh"], "script nope.sh: no such file"),
        (["submit"], "nothing to submit"),
        (["submit", "jobs.toml", "--script", "a.sh"], "not both"),
        (["submit", "jobs.toml", "--count", "0"], "jobs.toml: count: "),
        (["cancel"], "nothing to cancel"),
        (["cancel", UNKNOWN, "--state", "queued"], "not both"),
        (["cancel", "--name", "keep"], "--yes"),
        (["vm", "start", "local", "-n", "0"], "--count must be at least 1"),
        (["vm", "start", "nowhere"], "unknown cloud 'nowhere'"),
        (["session", "cleanup"], "--yes"),
        (["simulate", "--trace", "nope.csv", "--config", "s.toml"], "nope.csv: cannot read"),
        (["simulate", "--trace", "bad.csv", "--config", "s.toml"], "bad.csv:2: expected"),
        (["simulate", "--trace", "latin1.csv", "--config", "s.toml"], "latin1.csv: "),
        (["simulate", "--trace", "t.csv", "--config", "nope.toml"], "nope.toml: no such file"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_arguments_are_one_error_line_and_change_nothing(
    work: Path,
    shared: Shared,
    endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    expected: str,
) -> None:
    (work / "jobs.toml").write_text(JOB)
    (work / "s.toml").write_text('name = "sim"\n' + LOCAL)
    (work / "t.csv").write_text("arrival_s,runtime_s\n0,10\n")
    (work / "bad.csv").write_text("arrival_s,runtime_s\nsoon,10\n")
    (work / "latin1.csv").write_bytes("arrival_s,runtime_s\n0,10 \xe9t\xe9\n".encode("latin-1"))
    monkeypatch.chdir(work)
    monkeypatch.setenv("CLOBI_SESSION", shared.file)
    before = contents(endpoint)
    assert_one_error_line(cli(*args), expected)
    assert contents(endpoint) == before


def test_commands_without_a_usable_session_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.sh").write_text("true\n")
    (tmp_path / "garbage.json").write_text("{not json")
    (tmp_path / "other.json").write_text('{"id": "x"}')
    for args, expected in [
        (["status"], "no session yet"),
        (["submit", "--script", str(tmp_path / "a.sh")], "no session yet"),
        (["vm", "list"], "no session yet"),
        (["status", "--session", "nope"], "no session 'nope'"),
        (["status", "--session", str(tmp_path / "none.json")], "no session file"),
        (["status", "--session", str(tmp_path) + "/"], "cannot read"),
        (["status", "--session", str(tmp_path / "garbage.json")], "not a clobi session file"),
        (["wait", "--session", str(tmp_path / "other.json")], "not a clobi session file"),
    ]:
        assert_one_error_line(cli(*args), expected)


# --- sandbox archives -----------------------------------------------------------------------


def archive(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def entry(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"evil", **attrs: Any
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data if kind == tarfile.REGTYPE else None


def declared_huge(name: str, size: int) -> bytes:
    """A gzip of a few hundred bytes whose one member claims `size` bytes (a header only:
    tarfile would copy all of them)."""
    info = tarfile.TarInfo(name)
    info.size = size
    return gzip.compress(info.tobuf(format=tarfile.PAX_FORMAT) + b"\0" * 1024)


@cache
def many_members(count: int) -> bytes:
    return archive(*(entry(f"f{i}", data=b"") for i in range(count)))


# Built lazily: `outside` is the folder beside the destination, for absolute paths into it.
BAD_ARCHIVES: list[tuple[str, Callable[[Path], bytes], str, str]] = [
    (
        "symlink",
        lambda o: archive(entry("ok"), entry("out", tarfile.SYMTYPE, linkname=str(o))),
        "out",
        "link not allowed",
    ),
    (
        "symlink-then-write-through",
        lambda o: archive(
            entry("d", tarfile.SYMTYPE, linkname=str(o)), entry("d/evil", data=b"through")
        ),
        "d",
        "link not allowed",
    ),
    (
        "hard-link",
        lambda o: archive(entry("ok"), entry("hard", tarfile.LNKTYPE, linkname="ok")),
        "hard",
        "link not allowed",
    ),
    (
        "hard-link-outside",
        lambda o: archive(entry("hard", tarfile.LNKTYPE, linkname=str(o / "victim"))),
        "hard",
        "link not allowed",
    ),
    ("dot-dot", lambda o: archive(entry("ok"), entry("../evil")), "../evil", "'..' in path"),
    ("inner-dot-dot", lambda o: archive(entry("a/../../evil")), "a/../../evil", "'..'"),
    ("dot-dot-dir", lambda o: archive(entry("..", tarfile.DIRTYPE)), "..", "'..' in path"),
    ("absolute", lambda o: archive(entry(str(o / "evil"))), "evil", "absolute path"),
    ("char-device", lambda o: archive(entry("null", tarfile.CHRTYPE)), "null", "special file"),
    ("block-device", lambda o: archive(entry("sda", tarfile.BLKTYPE)), "sda", "special file"),
    ("fifo", lambda o: archive(entry("pipe", tarfile.FIFOTYPE)), "pipe", "special file"),
    ("setuid", lambda o: archive(entry("suid", mode=0o4755)), "suid", "setuid/setgid"),
    ("setgid", lambda o: archive(entry("sgid", mode=0o2755)), "sgid", "setuid/setgid"),
    (
        "setgid-directory",
        lambda o: archive(entry("d", tarfile.DIRTYPE, mode=0o2775)),
        "d",
        "setuid/setgid",
    ),
    ("declared-huge", lambda o: declared_huge("bomb", 2**40), "bomb", "larger than"),
    ("very-many-members", lambda o: many_members(MAX_MEMBERS + 1), f"f{MAX_MEMBERS}", "members"),
    ("no-name", lambda o: archive(entry("")), "''", "without a name"),
    ("name-too-long", lambda o: archive(entry("n" * 300)), "nnnn", "longer than 255"),
    (
        "file-then-directory",
        lambda o: archive(entry("a"), entry("a/b")),
        "a/b",
        "a is a file",
    ),
    (
        "directory-then-file",
        lambda o: archive(entry("a", tarfile.DIRTYPE), entry("a")),
        "'a'",
        "both a file and a directory",
    ),
]


def _bad_archive_params() -> list[Any]:
    return [pytest.param(*case[1:], id=case[0]) for case in BAD_ARCHIVES]


@pytest.mark.parametrize(("build", "member", "expected"), _bad_archive_params())
def test_extract_refuses_an_unsafe_archive_naming_the_member_and_writes_nothing(
    tmp_path: Path, build: Callable[[Path], bytes], member: str, expected: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("untouched\n")
    dest = tmp_path / "dest"
    data = build(outside)
    before = tree(tmp_path)
    with pytest.raises(SandboxError) as err:
        sandbox.extract(data, dest)
    message = str(err.value)
    assert "\n" not in message and message.startswith("sandbox member '"), message
    assert member in message and expected in message, message
    assert tree(tmp_path, skip=dest) == before, "something was written outside the destination"
    assert list(dest.iterdir()) == [], "the archive was checked before anything was written"


def test_extract_stops_a_gzip_bomb_at_the_total_limit_before_writing(tmp_path: Path) -> None:
    zeros = b"\0" * (1 << 20)  # 1 MiB a member, a few KiB compressed
    data = archive(*(entry(f"z{i}", data=zeros) for i in range(4)))
    assert len(data) < 20_000
    limits = sandbox.Limits(max_total_bytes=3 << 20)
    with pytest.raises(SandboxError, match=r"sandbox member 'z3': the sandbox is larger"):
        sandbox.extract(data, tmp_path / "dest", limits)
    assert list((tmp_path / "dest").iterdir()) == []


def test_extract_never_writes_through_a_link_the_destination_holds(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("untouched\n")
    for name, link in [("out", outside / "victim"), ("sub/victim", outside)]:
        dest = tmp_path / f"dest-{name.replace('/', '-')}"
        dest.mkdir()
        (dest / name.split("/")[0]).symlink_to(link)
        before = tree(outside)
        with pytest.raises(SandboxError, match=f"sandbox member '{name}': the destination holds"):
            sandbox.extract(archive(entry(name, data=b"pwned")), dest)
        assert tree(outside) == before


# --- fetch of a crafted result --------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(shared: Shared, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A job that ran and succeeded, as an agent records it (claim, then complete): its id
    and the key of its result archive, which each test replaces by a crafted one. No fetch
    of it ever succeeds, so each fetch tries again."""
    script = tmp_path_factory.mktemp("finished") / "done.sh"
    script.write_text("true\n")
    session = shared.session
    (job,) = JobClient(session).submit(JobSpec(script=str(script)))
    task = session.jobs.claim(job, 0, "vm-test-000001")
    assert task is not None
    key = naming.attempt_prefix(session.info.prefix, job, task.attempt) + naming.RESULT_ARCHIVE
    outcome = Outcome(JobState.SUCCEEDED, 0, None, key)
    assert session.jobs.complete(task, "vm-test-000001", outcome) is JobState.SUCCEEDED
    return job, key


@pytest.mark.parametrize(("build", "member", "expected"), _bad_archive_params())
def test_fetch_refuses_a_crafted_result_in_one_line_and_writes_nothing_outside(
    tmp_path: Path,
    shared: Shared,
    finished: tuple[str, str],
    build: Callable[[Path], bytes],
    member: str,
    expected: str,
) -> None:
    session, (job, key) = shared.session, finished
    work = tmp_path / "work"
    outside = work / "deep"
    outside.mkdir(parents=True)
    (outside / "victim").write_text("untouched\n")
    session.aws.s3.put_object(Bucket=session.info.bucket, Key=key, Body=build(outside))
    dest = outside / "er" / "dest"
    before = tree(work, skip=dest)
    result = cli("fetch", job, "-o", str(dest), *shared.arg)
    assert_one_error_line(result, f"clobi: error: job {job}: sandbox member ", expected)
    assert member in result.err
    assert tree(work, skip=dest) == before
    assert not (dest / job / ".clobi-fetched").exists()
    kinds = [e.kind for e in JobClient(session).events([job])]
    assert "fetched" not in kinds


def test_fetch_into_a_destination_holding_a_link_writes_nothing_through_it(
    tmp_path: Path, shared: Shared, finished: tuple[str, str]
) -> None:
    session, (job, key) = shared.session, finished
    session.aws.s3.put_object(
        Bucket=session.info.bucket, Key=key, Body=archive(entry("stdout", data=b"pwned"))
    )
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    dest = tmp_path / "dest"
    (dest / job).mkdir(parents=True)
    (dest / job / "stdout").symlink_to(victim)
    result = cli("fetch", job, "-o", str(dest), *shared.arg)
    assert_one_error_line(result, f"job {job}: sandbox member 'stdout': the destination holds")
    assert victim.read_text() == "untouched\n"


@pytest.mark.parametrize(
    ("body", "output_dir", "expected"),
    [
        (b"not an archive at all", "dest", "archive is unreadable: not a tar archive"),
        (declared_huge("stdout", 2**33), "dest", "sandbox member 'stdout': larger than"),
        (archive(entry("stdout", data=b"fine\n")), "a-file", "cannot write into"),
    ],
    ids=["garbage", "huge-stdout", "into-a-file"],
)
def test_fetch_and_logs_of_a_broken_result_are_one_line(
    tmp_path: Path,
    shared: Shared,
    finished: tuple[str, str],
    body: bytes,
    output_dir: str,
    expected: str,
) -> None:
    session, (job, key) = shared.session, finished
    (tmp_path / "a-file").write_text("a file, not a folder\n")
    session.aws.s3.put_object(Bucket=session.info.bucket, Key=key, Body=body)
    before = tree(tmp_path)
    result = cli("fetch", job, "-o", str(tmp_path / output_dir), *shared.arg)
    assert_one_error_line(result, f"job {job}: ", expected)
    made = None if output_dir == "a-file" else tmp_path / output_dir  # fetch creates DIR/<job>
    assert tree(tmp_path, skip=made) == before
    logs = cli("logs", job, *shared.arg)
    if output_dir == "a-file":
        assert logs.code == 0 and logs.out == "fine\n"
    else:
        assert_one_error_line(logs, expected)


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
        (["session", "create", "@CONFIG@"], 1, "priorites: unknown key"),
        (["status", "--session", "nope"], 1, "no session 'nope'"),
    ],
    ids=["usage", "config", "session"],
)
def test_a_real_clobi_process_fails_in_one_line_without_a_traceback(
    tmp_path: Path, args: list[str], code: int, expected: str
) -> None:
    config = tmp_path / "session.toml"
    config.write_text('name = "bad"\npriorites = 3\n')
    done = subprocess.run(
        [sys.executable, "-m", "clobi", *(str(config) if a == "@CONFIG@" else a for a in args)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (code, ""), done
    assert "Traceback" not in done.stderr and expected in done.stderr.splitlines()[-1]
    if code == 1:
        assert len(done.stderr.splitlines()) == 1, done.stderr
