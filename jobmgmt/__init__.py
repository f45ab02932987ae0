"""The Job Management Interface: `connect()` to a session, then submit, monitor, cancel, fetch."""

from jobmgmt.client import JobClient, connect
from shared.records import JobSpec, JobState, JobStatus

__all__ = ["JobClient", "JobSpec", "JobState", "JobStatus", "connect"]
