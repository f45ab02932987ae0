"""`clobi session init`: a commented session config and sample jobs to start from."""

from __future__ import annotations

from pathlib import Path

from shared.errors import ConfigError

SESSION_TOML = """\
# A clobi session: queues, tables and an S3 prefix, and the clouds its VMs run in.
# Every key is optional except name; unknown keys are errors. Commented keys show their
# defaults: uncomment one to change it.

name = "myjobs"                 # lower-case letters, digits and '-', part of the session id
region = "us-east-1"
endpoint_url = "local"          # the embedded AWS endpoint on 127.0.0.1; leave out for real AWS
bucket = "clobi-sessions"       # S3 bucket; the session uses the prefix sessions/<id>/
priorities = 3                  # queues p1..p3, p3 is the highest
# default_priority = 1          # of a job that names none
# max_attempts = 3              # a failed job is retried until it has had this many attempts
lease_s = 60                    # a job whose agent stops renewing for this long is retried
heartbeat_s = 3                 # how often agents report (and see cancels and drains)
# dispatch_window = 64          # at most this many messages wait in the queues
# starvation_s = 300            # a waiting job rises one priority level per this much
# vm_timeout_s = 120            # a VM silent for this long is marked failed and terminated
# register_timeout_s = 300      # a VM whose agent has not registered by then: the same
# resend_s = 300                # a job message not claimed within this is sent again
# log_ship_s = 15               # running jobs' stdout/stderr are shipped this often
# max_log_bytes = 67108864      # stdout and stderr are cut at this size
# job_user = "clobi-job"        # slot N runs jobs as clobi-job-N (agent: root or the unit's caps)

# The elastic pool: `clobi rm` follows the queue when enabled (or `clobi autoscale on`).
[autoscale]
# enabled = false
# idle_timeout_s = 300          # an idle VM is drained (never killed) after this
# max_launches_per_min = 20
# budget_per_hour = 5.0         # cap on the pool's cost rate (default: none)
# max_vm_lifetime_s = 86400     # a VM older than this is drained (default: none)
# launch_backoff_s = 60         # a cloud whose launches fail is skipped (doubling, max 15 min)
# step_s = 5                    # how often the autoscaler decides

# A software release jobs can name with `release = "..."`; mounted read-only on the VMs.
# [releases."1.0"]
# archive = "release-1.0.tar.gz"    # uploaded at session create (local VMs extract it)
# image = "release-1.0.img"         # or an ext4/squashfs image, mounted through a loop device
# snapshot = "snap-0123456789abcdef0"  # EBS snapshot used on EC2

[[clouds]]
name = "local"
driver = "local"                # VMs are agent processes on this machine
cores_per_vm = 2
# min_vms = 0
max_vms = 2
# cost_per_hour = 0.0           # the autoscaler fills the cheapest cloud first
# boot_s = 2.0                  # how long a VM takes to come up (the simulator)
# aws_profile = "clobi-agent"   # the AWS profile local agents use (default: yours)

# [[clouds]]
# name = "aws"
# driver = "ec2"
# ami = "ami-0123456789abcdef0"   # an image built from vm-image/
# instance_type = "c5.large"      # or ["c5.large", "c5a.large"]: tried in order without capacity
# cores_per_vm = 2
# min_vms = 0
# max_vms = 10
# cost_per_hour = 0.1
# boot_s = 60.0
# spot = false
# instance_profile = "clobi-agent"
# subnet_id = "subnet-0123456789abcdef0"  # or a list (zones), tried in order likewise
# security_group_ids = ["sg-0123456789abcdef0"]
# region = "us-east-1"          # default: the session's
# endpoint_url = "https://ec2.us-east-1.amazonaws.com"  # default: the session's
# install = "image"             # or "wheel": cloud-init installs this clobi at boot
# wheel = "dist/clobi-0.1.0-py3-none-any.whl"  # for install = "wheel" (default: built)
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
