"""A live handle on one session: its info, AWS clients and tables, built once and shared."""

from __future__ import annotations

from functools import cached_property

from shared.aws import Aws, translated
from shared.errors import AwsError
from shared.events import EventLog
from shared.jobs import JobTable
from shared.models import SessionInfo
from shared.queues import JobQueues
from shared.records import JobState
from shared.vms import VmTable

# What AWS answers about a queue, table or bucket that does not exist.
MISSING_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NoSuchBucket",
    }
)


class Session:
    def __init__(self, info: SessionInfo, aws: Aws | None = None) -> None:
        self.info = info
        self.aws = aws or Aws(info.region, info.endpoint_url)

    @property
    def id(self) -> str:
        return self.info.id

    @cached_property
    def events(self) -> EventLog:
        return EventLog(self.aws, self.info.tables["events"])

    @cached_property
    def jobs(self) -> JobTable:
        lease_s = self.info.config.lease_s
        return JobTable(
            self.aws,
            self.info.tables["jobs"],
            self.events,
            self.info.tables["vms"],
            lease_s=lease_s,
        )

    @cached_property
    def queues(self) -> JobQueues:
        return JobQueues(self.aws, self.id, self.info.queue_urls)

    @cached_property
    def vms(self) -> VmTable:
        return VmTable(self.aws, self.info.tables["vms"], urgent_s=self.info.config.lease_s / 4)

    def gone(self, err: AwsError) -> bool:
        """Whether `err` means the session no longer exists on its endpoint (cleaned up, or
        an embedded endpoint restarted): its jobs table is missing. Raises AwsError."""
        if err.code not in MISSING_CODES:
            return False
        try:
            with translated("check the session"):
                self.aws.ddb.describe_table(TableName=self.info.tables["jobs"])
        except AwsError as check:
            if check.code == "ResourceNotFoundException":
                return True
            raise
        return False

    def cancel(self, job_id: str) -> str:
        """Cancel one job: a queued one at once, a running one through its agent's next VM
        heartbeat. Returns `cancelled`, `cancelling` or `finished` (too late); raises
        JobNotFound for an unknown id."""
        state = self.jobs.cancel(job_id)
        if state is JobState.CANCELLED:
            return "cancelled"
        if state is JobState.RUNNING:
            vm = self.jobs.get(job_id).get("vm")
            if vm:
                self.vms.request_cancel(vm, job_id)
            return "cancelling"
        self.jobs.get(job_id)  # raises JobNotFound for an unknown id
        return "finished"


def exists(info: SessionInfo) -> bool | None:
    """Whether a session still exists on its endpoint (its jobs table is there); None when
    the endpoint cannot be asked."""
    try:
        with translated("look for the session"):
            Aws(info.region, info.endpoint_url, retries=1).ddb.describe_table(
                TableName=info.tables["jobs"]
            )
    except AwsError as err:
        return False if err.code == "ResourceNotFoundException" else None
    return True
