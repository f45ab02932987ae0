"""The Job Management Interface: submit, monitor, cancel and fetch jobs of one session."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from jobmgmt.validate import validate_all
from shared import naming, sandbox, sessionfile
from shared.aws import translated
from shared.dispatch import Dispatcher
from shared.errors import AwsError, ClobiError, ConfigError, JobNotFound
from shared.events import Event
from shared.jobs import NewJob, status_of
from shared.models import JobSpec, JobState, JobStatus
from shared.session import Session

Progress = Callable[[str], None]
Counter = Callable[[int, int], None]  # (done, total)


def connect(session: str | None = None) -> JobClient:
    """A client for a session: by id or session-file path; default $CLOBI_SESSION, else the
    most recent session."""
    return JobClient(Session(sessionfile.resolve(session)))


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
        """Submit jobs; returns their ids. With a token, a repeated call creates nothing new
        and returns the same ids. Everything is validated before anything is sent."""
        specs = [specs] if isinstance(specs, JobSpec) else list(specs)
        config = self.session.info.config
        validate_all(specs, self.session.info)
        batch = naming.batch_id(self.session.id, token)
        seq0 = time.time_ns() // 1_000_000 * 100_000
        jobs: list[NewJob] = []
        for spec in specs:
            key = self._upload_sandbox(spec)
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
            name = spec.name or Path(spec.script).stem
            for _ in range(spec.count):
                index = len(jobs)
                jobs.append(
                    NewJob(
                        id=naming.job_id(batch, index),
                        name=name,
                        priority=spec.priority or config.default_priority,
                        max_attempts=spec.max_attempts or config.max_attempts,
                        task=task,
                        seq=seq0 + index,
                    )
                )
        self._create(jobs, progress)
        Dispatcher(self.session).fill()
        return [job.id for job in jobs]

    def _create(self, jobs: list[NewJob], progress: Counter | None) -> None:
        chunk = 500
        parts = [jobs[i : i + chunk] for i in range(0, len(jobs), chunk)]
        done = 0
        with ThreadPoolExecutor(max_workers=4) as pool:
            for part, _ in zip(parts, pool.map(self._jobs.create, parts), strict=True):
                done += len(part)
                if progress:
                    progress(done, len(jobs))

    def _upload_sandbox(self, spec: JobSpec) -> str:
        """Pack script and inputs; upload unless the same archive is stored already."""
        entries = [(Path(spec.script).name, Path(spec.script))]
        entries += [(Path(p).name, Path(p)) for p in spec.inputs]
        data = sandbox.pack(entries)
        info = self.session.info
        key = naming.sandbox_key(info.prefix, sandbox.digest(data))
        s3 = self.session.aws.s3
        try:
            with translated("check input sandbox"):
                s3.head_object(Bucket=info.bucket, Key=key)
            return key
        except AwsError as err:
            if err.code not in ("404", "NoSuchKey", "NotFound"):
                raise
        with translated("upload input sandbox"):
            s3.put_object(Bucket=info.bucket, Key=key, Body=data)
        return key

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
        """Block until the jobs are all finished; returns their status. Raises TimeoutError."""
        ids = list(ids or [])
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            rows = self.status(ids or None)
            if progress:
                progress(summary(rows))
            if all(r.state.terminal for r in rows):
                return rows
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout:g} s: {summary(rows)}")
            time.sleep(
                poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic()))
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
    ) -> list[Path]:
        """Download the outputs and logs of finished jobs into dest/<job-id>/ (safe extraction,
        parallel). Jobs fetched before are skipped; unfinished jobs are left for later."""
        dest = Path(dest)
        rows = [r for r in self.status(ids) if r.state.terminal and r.result_key]
        done: list[Path] = []
        with ThreadPoolExecutor(max_workers=8) as pool:
            for path in pool.map(lambda r: self._fetch_one(r, dest), rows):
                done.append(path)
                if progress:
                    progress(len(done), len(rows))
        return done

    def _fetch_one(self, row: JobStatus, dest: Path) -> Path:
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


def summary(rows: Sequence[JobStatus]) -> str:
    """`4 jobs: 1 queued, 2 running, 1 succeeded`."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[str(row.state)] = counts.get(str(row.state), 0) + 1
    parts = [f"{counts[s]} {s}" for s in JobState if s in counts]
    return f"{len(rows)} job{'s' if len(rows) != 1 else ''}: " + (", ".join(parts) or "none")


def as_dicts(rows: Sequence[JobStatus]) -> list[dict[str, Any]]:
    return [row.public() for row in rows]
