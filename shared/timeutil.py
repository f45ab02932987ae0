"""Timestamps: UTC, ISO 8601, one format everywhere."""

from datetime import UTC, datetime
from typing import overload


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def iso(at: datetime) -> str: ...
@overload
def iso(at: None) -> None: ...
def iso(at: datetime | None) -> str | None:
    """ISO 8601 UTC with a Z, or None."""
    if at is None:
        return None
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
