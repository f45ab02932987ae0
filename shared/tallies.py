"""How many jobs finished, and how: counts kept with the transitions that finish jobs, so a
view of a session of any size reads a few small items instead of walking an index of every
finished job (100,000 succeeded jobs: about 40 MB a count).

A finishing transition adds one to its count in the same transaction as the job's write
(docs/design.md): an agent's on its own VM record, which only it writes often; anyone else's
(a cancel, the reaper, a refusal) on one of a few shared items, by job. The counts live in the
VM table, which every view scans anyway.
"""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Any

from shared.aws import to_value
from shared.records import TERMINAL_STATES, JobState

SHARED_ITEMS = 8  # the items non-agent writers spread their counts over
PREFIX = "n_"  # the count of state s is the attribute n_<s>


def counter_key(vm: str | None, job_id: str) -> str:
    """The item a finishing write counts on: the writing agent's VM record, else one of the
    shared items (ids starting with `@`, which are not VMs)."""
    return vm or f"@tally-{zlib.crc32(job_id.encode()) % SHARED_ITEMS}"


def count_update(table: str, key: str, state: JobState) -> dict[str, Any]:
    """The transaction item that counts one more job finished in `state`."""
    assert state in TERMINAL_STATES, state
    return {
        "Update": {
            "TableName": table,
            "Key": {"id": to_value(key)},
            "UpdateExpression": "ADD #n :one",
            "ExpressionAttributeNames": {"#n": f"{PREFIX}{state}"},
            "ExpressionAttributeValues": {":one": to_value(1)},
        }
    }


def add_counts(item: dict[str, Any], into: Counter[JobState]) -> None:
    """Add the counts an item of the VM table holds."""
    for state in TERMINAL_STATES:
        into[state] += int(item.get(f"{PREFIX}{state}", 0))
