"""`clobi session init`: a commented session config and sample jobs to start from."""

from __future__ import annotations

from pathlib import Path

from shared.errors import ConfigError

SESSION_TOML = """\
# A clobi session: queues, tables and an S3 prefix, and the clouds its VMs run in.
# Every key is optional except name; unknown keys are errors.

name = "myjobs"                 # lower-case letters, digits and '-', part of the session id
region = "us-east-1"
endpoint_url = "local"          # the embedded AWS endpoint on 127.0.0.1; leave out for real AWS
bucket = "clobi-sessions"       # S3 bucket; the session uses the prefix sessions/<id>/
priorities = 3                  # queues p1..p3, p3 is the highest
default_priority = 1
max_attempts = 3                # a failed job is retried until it has had this many attempts
lease_s = 60                    # a job whose agent stops renewing for this long is retried
heartbeat_s = 3                 # how often agents report (and see cancels and drains)
dispatch_window = 64            # at most this many messages wait in the queues
vm_timeout_s = 120              # a VM silent for this long is marked failed and terminated
register_timeout_s = 300        # a VM whose agent has not registered by then: the same

# A software release jobs can name with `release = "..."`; mounted read-only on the VMs.
# [releases."1.0"]
# archive = "release-1.0.tar.gz"    # uploaded at session create (local VMs extract it)
# snapshot = "snap-0123456789abcdef0"  # EBS snapshot used on EC2

[[clouds]]
name = "local"
driver = "local"                # VMs are agent processes on this machine
cores_per_vm = 2
max_vms = 2

# [[clouds]]
# name = "aws"
# driver = "ec2"
# ami = "ami-0123456789abcdef0"   # an image built from vm-image/
# instance_type = "c5.large"
# cores_per_vm = 2
# max_vms = 20
# spot = true
# instance_profile = "clobi-agent"
"""

JOBS_TOML = """\
# Jobs to submit with `clobi submit jobs.toml`: one [[job]] table per kind of job.
[[job]]
script = "hello.sh"      # run with bash in a fresh working directory
count = 3                # three copies
outputs = ["*.txt"]      # files to bring back, besides stdout and stderr
# priority = 2
# release = "1.0"
# inputs = ["data.csv"]
# cores = 1
# walltime = 3600
# max_attempts = 3
# env = { MODE = "fast" }
# args = ["--verbose"]
"""

HELLO_SH = """\
#!/bin/bash
# A sample job: clobi sets CLOBI_JOB_ID, CLOBI_ATTEMPT, CLOBI_CORES and CLOBI_WORKDIR.
echo "hello from job $CLOBI_JOB_ID (attempt $CLOBI_ATTEMPT) on $(hostname)"
echo "$CLOBI_JOB_ID" > "result-$CLOBI_JOB_ID.txt"
"""


def write_template(directory: Path) -> list[Path]:
    """Write session.toml, jobs.toml and hello.sh; refuses to overwrite anything."""
    files = {"session.toml": SESSION_TOML, "jobs.toml": JOBS_TOML, "hello.sh": HELLO_SH}
    directory.mkdir(parents=True, exist_ok=True)
    for name in files:
        if (directory / name).exists():
            raise ConfigError(f"{directory / name} exists already; nothing written")
    written = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text)
        if name.endswith(".sh"):
            path.chmod(0o755)
        written.append(path)
    return written
