"""The Job Management Interface: submit, monitor, cancel and fetch jobs of one session."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter as Counter_
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from jobmgmt.validate import validate_all
from jobmgmt.waiting import Progress, wait_for
from shared import naming, sandbox, sessionfile
from shared.aws import translated
from shared.dispatch import Dispatcher
from shared.errors import (
    AwsError,
    BatchTaken,
    ClobiError,
    ConfigError,
    JobNotFound,
    ValidationError,
)
from shared.events import Event
from shared.jobcreate import NewJob
from shared.jobindex import status_of
from shared.records import JobSpec, JobState, JobStatus, VmState
from shared.session import Session
from shared.vms import AUTOSCALE_SETTING

MAX_BATCH_DRAWS = 5
Counter = Callable[[int, int], None]  # (done, total)

log = logging.getLogger(__name__)


def connect(session: str | None = None) -> JobClient:
    """A client for a session: by id or session-file path; default $CLOBI_SESSION, else the
    most recent session."""
    return JobClient(Session(sessionfile.resolve(session)))


def submission_digest(planned: list[dict[str, Any]]) -> str:
    """What a token is bound to: every job's script and inputs (by content), options, count."""
    text = json.dumps(planned, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _sort_key(job_id: str) -> tuple[str, int]:
    batch, _, index = job_id.partition(".")
    return batch, int(index) if index.isdigit() else 0


class JobClient:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._jobs = session.jobs

    @property
    def session_id(self) -> str:
        return self.session.id

    # --- submit -----------------------------------------------------------------------------

    def submit(
        self,
        specs: JobSpec | Sequence[JobSpec],
        token: str | None = None,
        progress: Counter | None = None,
    ) -> list[str]:
        """Submit jobs; returns their ids. With a token, a repeated call of the same submission
        creates nothing new and returns the same ids; the token with another submission is
        refused (ValidationError) and nothing is created. Everything is validated first."""
        specs = [specs] if isinstance(specs, JobSpec) else list(specs)
        validate_all(specs, self.session.info)
        packed = [self._packed(spec) for spec in specs]
        planned = [self._planned(spec, key) for spec, (key, _) in zip(specs, packed, strict=True)]
        digest = submission_digest(planned)
        if token is not None:  # refused before anything is uploaded
            self._check_token(naming.batch_id(self.session.id, token), token, digest)
        for key, data in packed:
            self._upload_sandbox(key, data)
        for _ in range(MAX_BATCH_DRAWS):
            jobs = self._jobs_of(planned, naming.batch_id(self.session.id, token), digest)
            try:
                self._create(jobs, progress)
            except BatchTaken:
                if token is None and not self._held_by(jobs[0].id, digest):
                    continue  # a random batch id that another submission holds: draw again
                self._check_token(jobs[0].id.partition(".")[0], token or "", digest)
                self._create(jobs, progress, resume=True)  # this one, resumed after a crash
            self._release(jobs)
            return [job.id for job in jobs]
        raise ClobiError(f"no free batch id after {MAX_BATCH_DRAWS} draws")

    def _release(self, jobs: list[NewJob]) -> None:
        """Send the new jobs' messages now, as far as the dispatch window allows. The jobs
        exist: should this fail (throttled, say), agents and the Resource Manager release
        them at their next fill, so the submit still succeeds."""
        try:
            Dispatcher(self.session).fill(fresh=[job.pending() for job in jobs])
        except AwsError as err:
            log.warning("jobs submitted; their release is left to the next fill: %s", err)

    def _check_token(self, batch: str, token: str, digest: str) -> None:
        first = naming.job_id(batch, 0)
        try:
            if self._held_by(first, digest):
                return
        except JobNotFound:
            return
        raise ValidationError(
            f"token {token!r} was used for another submission of this session "
            "(other scripts, inputs, options or count); nothing was submitted"
        )

    def _held_by(self, job_id: str, digest: str) -> bool:
        """Whether the job exists as part of the submission `digest` (JobNotFound: none)."""
        return bool(self._jobs.get(job_id).get("submission") == digest)

    def _planned(self, spec: JobSpec, key: str) -> dict[str, Any]:
        """Everything a submission of `spec` decides, its inputs by content (the key)."""
        config = self.session.info.config
        task = {
            "script": Path(spec.script).name,
            "args": list(spec.args),
            "env": dict(spec.env),
            "release": spec.release,
            "cores": spec.cores,
            "walltime": spec.walltime,
            "outputs": list(spec.outputs),
            "sandbox_key": key,
        }
        return {
            "task": task,
            "name": spec.name or Path(spec.script).stem,
            "priority": spec.priority or config.default_priority,
            "max_attempts": spec.max_attempts or config.max_attempts,
            "count": spec.count,
        }

    def _jobs_of(self, planned: list[dict[str, Any]], batch: str, digest: str) -> list[NewJob]:
        seq0 = time.time_ns() // 1_000_000 * 100_000
        jobs: list[NewJob] = []
        for plan in planned:
            for _ in range(plan["count"]):
                index = len(jobs)
                jobs.append(
                    NewJob(
                        id=naming.job_id(batch, index),
                        name=plan["name"],
                        priority=plan["priority"],
                        max_attempts=plan["max_attempts"],
                        task=plan["task"],
                        seq=seq0 + index,
                        submission=digest,
                    )
                )
        return jobs

    def _create(self, jobs: list[NewJob], progress: Counter | None, resume: bool = False) -> None:
        """The first part alone (it claims the batch: BatchTaken if held), then the rest."""
        chunk = 500
        parts = [jobs[i : i + chunk] for i in range(0, len(jobs), chunk)]
        done = 0
        if not resume:
            self._jobs.create(parts[0], first=True)
            done, parts = len(parts[0]), parts[1:]
            if progress:
                progress(done, len(jobs))
        with ThreadPoolExecutor(max_workers=4) as pool:
            for part, _ in zip(parts, pool.map(self._jobs.create, parts), strict=True):
                done += len(part)
                if progress:
                    progress(done, len(jobs))
        batch = jobs[0].id.rsplit(".", 1)[0]
        self.session.events.record_submission(batch, len(jobs))

    def _packed(self, spec: JobSpec) -> tuple[str, bytes]:
        """Script and inputs packed, with the content-addressed key they are stored under."""
        entries = [(Path(spec.script).name, Path(spec.script))]
        entries += [(Path(p).name, Path(p)) for p in spec.inputs]
        data = sandbox.pack(entries)
        return naming.sandbox_key(self.session.info.prefix, sandbox.digest(data)), data

    def _upload_sandbox(self, key: str, data: bytes) -> None:
        """Upload unless the same archive is stored already."""
        info = self.session.info
        s3 = self.session.aws.s3
        try:
            with translated("check input sandbox"):
                s3.head_object(Bucket=info.bucket, Key=key)
            return
        except AwsError as err:
            if err.code not in ("404", "NoSuchKey", "NotFound"):
                raise
        with translated("upload input sandbox"):
            s3.put_object(Bucket=info.bucket, Key=key, Body=data)

    # --- monitor ----------------------------------------------------------------------------

    def status(
        self,
        ids: Iterable[str] | None = None,
        *,
        state: JobState | str | None = None,
        name: str | None = None,
    ) -> list[JobStatus]:
        """Status rows, by id or for the whole session (index queries, never a table scan)."""
        ids = list(ids or [])
        if ids:
            items = self._existing(ids)
            rows = [status_of(items[i]) for i in ids]
        else:
            states = [JobState(state)] if state else list(JobState)
            rows = [status_of(item) for s in states for item in self._jobs.by_state(s)]
            rows.sort(key=lambda r: _sort_key(r.id))
        if state:
            rows = [r for r in rows if r.state == JobState(state)]
        if name:
            rows = [r for r in rows if r.name == name]
        return rows

    def wait(
        self,
        ids: Iterable[str] | None = None,
        timeout: float | None = None,
        progress: Progress | None = None,
        poll_s: float = 1.0,
    ) -> list[JobStatus]:
        """Block until the jobs (all of the session's, without ids) are finished; returns
        their status. Unknown ids raise JobNotFound. Raises TimeoutError."""
        ids = list(ids or [])
        if ids:
            self._existing(ids)
        return wait_for(self.session, ids, timeout, progress, poll_s, summary)

    def idle_pool(self) -> str | None:
        """Why queued jobs would wait for ever, if they would: no VM runs or starts, and the
        autoscaler is off. None when some VM or the autoscaler can take them."""
        live = (VmState.STARTING, VmState.RUNNING)
        if any(vm.state in live for vm in self.session.vms.all()):
            return None
        switch = self.session.vms.setting(AUTOSCALE_SETTING)
        if self.session.info.config.autoscale.enabled if switch is None else switch:
            return None
        return (
            "no VM is running and the autoscaler is off: queued jobs wait until "
            "`clobi vm start CLOUD` or `clobi autoscale on` (with `clobi rm` running)"
        )

    def events(self, ids: Iterable[str]) -> list[Event]:
        ids = list(self._existing(ids))
        found = [e for job_id in ids for e in self.session.events.for_job(job_id)]
        return sorted(found, key=lambda e: e.at)

    def logs(self, job_id: str) -> dict[str, str]:
        """stdout and stderr of a job's latest attempt: from its result when it has one, else
        what its agent has shipped so far (running jobs ship every `log_ship_s`)."""
        item = self._existing([job_id])[job_id]
        if item.get("result_key"):
            # the agent cut each stream at max_log_bytes, and added a line saying so
            cap = self.session.info.config.max_log_bytes + 1024
            streams = sandbox.read_members(
                self._get(item["result_key"]) or b"", ("stdout", "stderr"), cap
            )
            return {name: data.decode("utf-8", errors="replace") for name, data in streams.items()}
        prefix = naming.attempt_prefix(self.session.info.prefix, job_id, int(item["attempt"]))
        return {
            stream: (self._get(prefix + stream) or b"").decode("utf-8", errors="replace")
            for stream in ("stdout", "stderr")
        }

    def _existing(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The items of these jobs, in order; raises for a malformed or unknown id."""
        ids = list(ids)
        for job_id in ids:
            if not naming.is_job_id(job_id):
                raise ConfigError(
                    f"malformed job id {job_id[:80]!r} (job ids look like 1a2b3c4d.0)"
                )
        items = self._jobs.get_many(ids)
        missing = [i for i in ids if i not in items]
        if missing:
            raise JobNotFound(f"no job {missing[0]} in session {self.session.id}")
        return {i: items[i] for i in ids}

    def _get(self, key: str) -> bytes | None:
        try:
            with translated(f"read s3://{self.session.info.bucket}/{key}"):
                out = self.session.aws.s3.get_object(Bucket=self.session.info.bucket, Key=key)
                return bytes(out["Body"].read())
        except AwsError as err:
            if err.code in ("NoSuchKey", "404"):
                return None
            raise

    # --- act --------------------------------------------------------------------------------

    def cancel(self, ids: Iterable[str]) -> dict[str, str]:
        """Cancel jobs: queued ones at once, running ones through their agent (seconds).
        Returns, per job, `cancelled`, `cancelling` or `finished` (too late). An unknown id
        cancels nothing."""
        ids = list(self._existing(ids))
        return {job_id: self.session.cancel(job_id) for job_id in ids}

    def fetch(
        self,
        ids: Iterable[str] | None = None,
        dest: Path | str = ".",
        progress: Counter | None = None,
        unsuccessful: bool = False,
    ) -> Fetched:
        """Download the outputs and logs of succeeded jobs into dest/<job-id>/ (safe
        extraction, parallel); with `unsuccessful`, those of failed and cancelled jobs too,
        into dest/failed/<job-id>/ and dest/cancelled/<job-id>/. Jobs fetched before are
        skipped; the result's `skipped` counts the jobs left out, by why."""
        dest = Path(dest)
        rows: list[JobStatus] = []
        skipped: Counter_[str] = Counter_()
        for row in self.status(ids):
            if not row.state.terminal:
                skipped["unfinished"] += 1
            elif row.state is not JobState.SUCCEEDED and not unsuccessful:
                skipped[str(row.state)] += 1
            elif row.result_key is None:
                skipped["without a result"] += 1
            else:
                rows.append(row)
        done = Fetched(skipped=dict(skipped))
        with ThreadPoolExecutor(max_workers=8) as pool:
            for path in pool.map(lambda r: self._fetch_one(r, dest), rows):
                done.append(path)
                if progress:
                    progress(len(done), len(rows))
        return done

    def _fetch_one(self, row: JobStatus, dest: Path) -> Path:
        if row.state is not JobState.SUCCEEDED:  # never where a result would be looked for
            dest = dest / str(row.state)
        target = dest / row.id
        marker = target / ".clobi-fetched"
        if marker.exists() and marker.read_text().strip() == row.result_key:
            return target
        assert row.result_key is not None
        archive = self._get(row.result_key)
        if archive is None:
            raise ClobiError(f"job {row.id}: its result {row.result_key} is missing")
        try:
            target.mkdir(parents=True, exist_ok=True)
            sandbox.extract(archive, target)
        except OSError as err:
            raise ClobiError(f"job {row.id}: cannot write into {target}: {err.strerror}") from None
        except ClobiError as err:
            raise ClobiError(f"job {row.id}: {err}") from None
        marker.write_text(row.result_key + "\n")
        self.session.events.append(row.id, "fetched", attempt=row.attempt)
        return target


class Fetched(list[Path]):
    """The folders fetched into, and how many jobs were left out, by why."""

    def __init__(self, skipped: dict[str, int]) -> None:
        super().__init__()
        self.skipped = skipped

    def note(self) -> str:
        """`skipped 2 jobs: 1 failed, 1 unfinished` (empty when none was)."""
        if not self.skipped:
            return ""
        total = sum(self.skipped.values())
        parts = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        return f"skipped {total} job{'s' if total != 1 else ''}: {parts}"


def summary(rows: Sequence[JobStatus]) -> str:
    """`4 jobs: 1 queued, 2 running, 1 succeeded`."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[str(row.state)] = counts.get(str(row.state), 0) + 1
    parts = [f"{counts[s]} {s}" for s in JobState if s in counts]
    return f"{len(rows)} job{'s' if len(rows) != 1 else ''}: " + (", ".join(parts) or "none")


def as_dicts(rows: Sequence[JobStatus]) -> list[dict[str, Any]]:
    return [row.public() for row in rows]
