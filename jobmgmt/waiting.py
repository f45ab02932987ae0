"""`wait`: until jobs are finished, read by id from the jobs table itself.

The indexes lag the table on AWS (eventual consistency), and a job moving between states can be
in neither state's index for a moment: a wait built on them could see no jobs right after a
submit, or miss one, and return early. So a wait reads the jobs themselves, consistently, by id;
a wait for "every job" takes its ids from the session's submission records (a consistent read
of the base table as well). A finished job stays finished: only unfinished ones are read
again, so a poll costs what is still running, not the session's size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from shared import naming
from shared.jobindex import status_of
from shared.records import JobStatus
from shared.session import Session

Progress = Callable[[str], None]


class Waiter:
    def __init__(self, session: Session, ids: Sequence[str] | None) -> None:
        self._session = session
        self._all = not ids
        self._ids: list[str] = list(ids or [])
        self._rows: dict[str, JobStatus] = {}
        self._known_batches: set[str] = set()

    def poll(self) -> list[JobStatus]:
        """Every job's status now, in the order asked (for all: submission order)."""
        if self._all:
            self._add_new_submissions()
        unfinished = [
            i for i in self._ids if i not in self._rows or not self._rows[i].state.terminal
        ]
        items = self._session.jobs.get_many(unfinished)
        for job_id, item in items.items():
            self._rows[job_id] = status_of(item)
        return [self._rows[i] for i in self._ids if i in self._rows]

    def _add_new_submissions(self) -> None:
        for batch, count in self._session.events.submissions().items():
            if batch not in self._known_batches:
                self._known_batches.add(batch)
                self._ids += [naming.job_id(batch, index) for index in range(count)]


def wait_for(
    session: Session,
    ids: Sequence[str] | None,
    timeout: float | None,
    progress: Progress | None,
    poll_s: float,
    summary: Callable[[Sequence[JobStatus]], str],
) -> list[JobStatus]:
    """Block until the jobs are all finished; their status. Raises TimeoutError."""
    waiter = Waiter(session, ids)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        rows = waiter.poll()
        if progress:
            progress(summary(rows))
        if all(r.state.terminal for r in rows):
            return rows
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s: {summary(rows)}")
        left = None if deadline is None else deadline - time.monotonic()
        time.sleep(poll_s if left is None else max(0.0, min(poll_s, left)))
