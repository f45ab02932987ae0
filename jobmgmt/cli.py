"""The job commands of the CLI: a thin layer over jobmgmt's Python API."""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from jobmgmt.client import JobClient, as_dicts, connect, summary
from shared.cli import Progress, add_json, add_session, print_json, print_table, seconds
from shared.config import load_job_file, parse
from shared.errors import AwsError, ClobiError
from shared.records import JobSpec, JobState, JobStatus
from shared.timeutil import utcnow

EXIT_FAILED = 1
EXIT_TIMEOUT = 3
EXIT_UNREACHABLE = 4  # `wait` could not ask (the endpoint, the session, the network)


def register(commands: Any) -> None:
    submit = commands.add_parser(
        "submit",
        help="submit jobs; prints their ids, one a line",
        description="Submit a job file ([[job]] tables) or one script, N times.",
    )
    submit.add_argument("jobfile", nargs="?", type=Path, help="job file (TOML)")
    submit.add_argument("--script", type=Path, help="a shell script to run (instead of a file)")
    submit.add_argument("--count", type=int, help="copies of the job (default 1)")
    submit.add_argument("--priority", type=int, help="1 (lowest) .. the session's priorities")
    submit.add_argument("--release", help="release to mount (CLOBI_RELEASE_DIR)")
    submit.add_argument(
        "--input",
        action="append",
        default=[],
        dest="inputs",
        metavar="PATH",
        help="file or directory for the input sandbox (repeatable; default: the script only)",
    )
    submit.add_argument(
        "--output",
        action="append",
        default=[],
        dest="outputs",
        metavar="GLOB",
        help="files to bring back, relative to the job's directory (repeatable; default: "
        "none, stdout and stderr always come back)",
    )
    submit.add_argument("--cores", type=int, help="cores (slots) the job takes (default 1)")
    submit.add_argument("--walltime", type=int, metavar="SECONDS", help="kill the job after this")
    submit.add_argument("--max-attempts", type=int, metavar="N", help="attempts before it fails")
    submit.add_argument("--name", help="a name to find the jobs by (default: the script's)")
    submit.add_argument(
        "--token",
        help="idempotency token: submitting again with the same "
        "token creates nothing new and prints the same ids",
    )
    add_session(submit)
    add_json(submit)
    submit.set_defaults(func=_submit)

    status = commands.add_parser("status", help="one row a job, and counts per state")
    status.add_argument("jobs", nargs="*", metavar="JOB", help="job ids (default: every job)")
    status.add_argument(
        "--state", choices=[str(s) for s in JobState], help="only jobs in this state"
    )
    status.add_argument("--name", help="only jobs of this name")
    add_session(status)
    add_json(status)
    status.set_defaults(func=_status)

    wait = commands.add_parser(
        "wait",
        help="wait until jobs finish; exit 0 when all succeeded",
        description=f"Wait for jobs (default: all of the session). Exit status 0 when all "
        f"succeeded, {EXIT_FAILED} when some failed or were cancelled, "
        f"{EXIT_TIMEOUT} on timeout, {EXIT_UNREACHABLE} when their state could not be read, "
        "130 when interrupted.",
    )
    wait.add_argument("jobs", nargs="*", metavar="JOB", help="job ids (default: every job)")
    wait.add_argument(
        "--timeout", type=seconds, metavar="SECONDS", help="give up after this (default: never)"
    )
    add_session(wait)
    add_json(wait)
    wait.set_defaults(func=_wait)

    cancel = commands.add_parser(
        "cancel",
        help="remove queued jobs or kill running ones",
        description="Cancel jobs by id, or every unfinished job matching --state/--name "
        "(asks first; --yes to skip).",
    )
    cancel.add_argument("jobs", nargs="*", metavar="JOB", help="job ids")
    cancel.add_argument(
        "--state",
        choices=["queued", "running", "saving"],
        help="every job in this state (asks first; default with --name: every unfinished one)",
    )
    cancel.add_argument("--name", help="every unfinished job of this name (asks first)")
    cancel.add_argument("--yes", action="store_true", help="cancel a filter's matches unasked")
    add_session(cancel)
    add_json(cancel)
    cancel.set_defaults(func=_cancel)

    fetch = commands.add_parser(
        "fetch", help="download output sandboxes and logs into DIR/<job-id>/"
    )
    fetch.add_argument("jobs", nargs="*", metavar="JOB", help="job ids (default: every job)")
    fetch.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="where to write DIR/<job-id>/ (default: the current folder)",
    )
    fetch.add_argument(
        "--unsuccessful",
        action="store_true",
        help="also fetch the partial outputs and logs of failed and cancelled jobs, into "
        "DIR/failed/<job-id>/ and DIR/cancelled/<job-id>/ (default: succeeded jobs only)",
    )
    add_session(fetch)
    add_json(fetch)
    fetch.set_defaults(func=_fetch)

    logs = commands.add_parser("logs", help="stdout and stderr of a job")
    logs.add_argument("job", metavar="JOB", help="a job id")
    add_session(logs)
    add_json(logs)
    logs.set_defaults(func=_logs)

    events = commands.add_parser("events", help="the lifecycle event log of jobs")
    events.add_argument("jobs", nargs="+", metavar="JOB", help="job ids")
    add_session(events)
    add_json(events)
    events.set_defaults(func=_events)


def _specs(args: argparse.Namespace) -> list[JobSpec]:
    overrides = {
        k: v
        for k, v in {
            "count": args.count,
            "priority": args.priority,
            "release": args.release,
            "cores": args.cores,
            "walltime": args.walltime,
            "max_attempts": args.max_attempts,
            "name": args.name,
        }.items()
        if v is not None
    }
    if args.inputs:
        overrides["inputs"] = [str(p) for p in args.inputs]
    if args.outputs:
        overrides["outputs"] = args.outputs
    if args.jobfile and args.script:
        raise ClobiError("give a job file or --script, not both")
    if args.jobfile:
        return [
            parse(JobSpec, {**spec.model_dump(), **overrides}, str(args.jobfile))
            for spec in load_job_file(args.jobfile)
        ]
    if args.script:
        return [parse(JobSpec, {"script": str(args.script), **overrides}, "arguments")]
    raise ClobiError("nothing to submit: give a job file or --script FILE")


def _submit(args: argparse.Namespace) -> int:
    specs = _specs(args)
    client = connect(args.session)
    progress = Progress()
    ids = client.submit(
        specs, token=args.token, progress=lambda d, t: progress.bar(d, t, "submitting")
    )
    progress.done()
    if args.json:
        print_json(ids)
    else:
        print("\n".join(ids))
    return 0


def _status(args: argparse.Namespace) -> int:
    rows = connect(args.session).status(args.jobs or None, state=args.state, name=args.name)
    if args.json:
        print_json(as_dicts(rows))
        return 0
    show_table(rows)
    print(summary(rows))
    return 0


def show_table(rows: list[JobStatus]) -> None:
    now = utcnow()
    print_table(
        ["id", "name", "state", "prio", "try", "vm", "runtime", "exit"],
        [
            [
                r.id,
                r.name,
                r.state,
                r.priority,
                r.attempt,
                r.vm,
                _runtime(r.started_at, r.finished_at, now),
                r.exit_code,
            ]
            for r in rows
        ],
    )


def _runtime(started: datetime | None, finished: datetime | None, now: datetime) -> str | None:
    if started is None:
        return None
    seconds = int(((finished or now) - started).total_seconds())
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _wait(args: argparse.Namespace) -> int:
    client = connect(args.session)
    progress = Progress()
    asked = [-math.inf]  # when the pool was last looked at: at most every 30 s, till told

    def report(line: str) -> None:
        progress.update(line)
        if "queued" in line and time.monotonic() - asked[0] >= 30:
            asked[0] = time.monotonic()
            if why := client.idle_pool():
                progress.done()
                print(f"clobi: {why}", file=sys.stderr)
                asked[0] = math.inf

    try:
        rows = client.wait(args.jobs or None, timeout=args.timeout, progress=report)
    except TimeoutError as err:
        progress.done()
        print(f"clobi: {err}", file=sys.stderr)
        return EXIT_TIMEOUT
    except AwsError as err:  # not "some failed": their state is unknown
        progress.done()
        print(f"clobi: error: cannot read the jobs' state: {err}", file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        progress.done()
    if args.json:
        print_json(as_dicts(rows))
    else:
        print(summary(rows))
    return 0 if all(r.state is JobState.SUCCEEDED for r in rows) else EXIT_FAILED


def _cancel(args: argparse.Namespace) -> int:
    client = connect(args.session)
    ids = list(args.jobs)
    if args.state or args.name:
        if ids:
            raise ClobiError("give job ids or --state/--name, not both")
        states = (
            [JobState(args.state)]
            if args.state
            else [JobState.QUEUED, JobState.RUNNING, JobState.SAVING]
        )
        ids = [r.id for s in states for r in client.status(state=s, name=args.name)]
        if not ids:
            print("no job matches", file=sys.stderr)
            return 0
        _confirm(f"Cancel {len(ids)} job(s)?", args.yes)
    elif not ids:
        raise ClobiError("nothing to cancel: give job ids, or --state/--name")
    result = client.cancel(ids)
    if args.json:
        print_json(result)
    else:
        for job_id, what in result.items():
            print(f"{job_id}: {what}")
    return 0


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise ClobiError(f"{question.rstrip('?')}: add --yes to confirm")
    if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
        raise ClobiError("nothing cancelled")


def _fetch(args: argparse.Namespace) -> int:
    client: JobClient = connect(args.session)
    progress = Progress()
    paths = client.fetch(
        args.jobs or None,
        args.output_dir,
        progress=lambda d, t: progress.bar(d, t, "fetching"),
        unsuccessful=args.unsuccessful,
    )
    progress.done()
    if args.json:
        print_json([str(p) for p in paths])
    else:
        for path in paths:
            print(path)
        print(f"fetched {len(paths)} job(s) into {args.output_dir}", file=sys.stderr)
    if paths.note():
        hint = "" if args.unsuccessful else " (--unsuccessful fetches failed and cancelled ones)"
        print(f"{paths.note()}{hint}", file=sys.stderr)
    return 0


def _logs(args: argparse.Namespace) -> int:
    out = connect(args.session).logs(args.job)
    if args.json:
        print_json(out)
        return 0
    sys.stdout.write(out["stdout"])
    if out["stderr"]:
        sys.stderr.write(out["stderr"])
    return 0


def _events(args: argparse.Namespace) -> int:
    events = connect(args.session).events(args.jobs)
    if args.json:
        print_json([e.public() for e in events])
        return 0
    print_table(
        ["at", "job", "kind", "try", "vm", "detail"],
        [[e.public()["at"], e.job_id, e.kind, e.attempt, e.vm, e.detail] for e in events],
    )
    return 0
