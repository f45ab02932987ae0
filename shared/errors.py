"""The one error hierarchy of clobi. The CLI turns any ClobiError into one line on stderr."""


class ClobiError(Exception):
    """Root of every error clobi raises on purpose."""


class ConfigError(ClobiError):
    """A session config, job file or argument is invalid."""


class ValidationError(ConfigError):
    """A job specification is invalid; raised before anything is sent."""


class AwsError(ClobiError):
    """An AWS call failed (translated from botocore at the AWS layer)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class ConditionFailed(AwsError):
    """A conditional write lost: someone else changed the item first."""


class Contention(AwsError):
    """Throttled, or a transaction conflict: nothing was applied, and the same call may be
    made again after a pause (shared/backoff.py)."""


class DriverError(ClobiError):
    """A cloud driver could not launch, list or terminate VMs."""


class ReleaseError(ClobiError):
    """A release volume could not be mounted (unknown, refused, or its cloud or disk failed)."""


class SandboxError(ClobiError):
    """A sandbox archive is unsafe or too large."""


class SessionNotFound(ClobiError):
    """No session matches the given id or path."""


class JobNotFound(ClobiError):
    """A job id is unknown to the session."""


class EndpointError(ClobiError):
    """The embedded AWS endpoint could not be started, reached or stopped."""


class InvalidJob(ClobiError):
    """A claimed job item whose task cannot be run as it is (forged or corrupt)."""


class BatchTaken(ClobiError):
    """A submission's first job id exists already: another submission (or this one, resumed)
    holds the batch."""
