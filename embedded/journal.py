"""The embedded endpoint's journal: acknowledged changes, appended as checksummed records and
made durable in groups (one fsync for every request that arrived while the last one ran)."""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

HEADER = struct.Struct("<II")  # payload length, crc32 of the payload
MAX_RECORD_BYTES = 1 << 30  # a length beyond this is a torn or foreign header, not a record


class Journal:
    """One open journal segment. `append` is called under the endpoint's request lock (so
    records are in the order moto applied them) and only writes to the OS; `sync` is called
    outside it and returns once a record is on disk: whoever finds it not yet synced runs one
    fsync for every record appended so far, and the others wait for that one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.bytes = os.fstat(self._fd).st_size
        self.records = 0
        self._written = 0  # sequence number of the last record handed to the OS
        self._synced = 0
        self._sync_lock = threading.Lock()

    @property
    def written(self) -> int:
        return self._written

    def append(self, payload: bytes) -> int:
        """Write one record; its sequence number (for `sync`). Raises OSError."""
        record = HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        view = memoryview(record)
        while view:
            view = view[os.write(self._fd, view) :]
        self.bytes += len(record)
        self.records += 1
        self._written += 1
        return self._written

    def sync(self, seq: int) -> None:
        """Block until record `seq` (and every one before it) is on disk. Raises OSError."""
        if seq <= self._synced:
            return
        with self._sync_lock:
            if seq <= self._synced:  # the fsync we waited for covered it
                return
            upto = self._written
            os.fdatasync(self._fd)
            self._synced = upto

    def close(self) -> None:
        """Sync what was written and close. Idempotent."""
        if self._fd >= 0:
            self.sync(self._written)
            os.close(self._fd)
            self._fd = -1


def read_records(path: Path) -> Iterator[bytes]:
    """The payloads of a segment, in order, up to the first torn or damaged record (a crash
    mid-append leaves at most the last one so; it was never acknowledged)."""
    with open(path, "rb") as segment:
        while True:
            head = segment.read(HEADER.size)
            if len(head) < HEADER.size:
                return
            length, crc = HEADER.unpack(head)
            if length > MAX_RECORD_BYTES:
                return
            payload = segment.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            yield payload


def fsync_dir(path: Path) -> None:
    """Make the names in a folder (a file created, renamed or removed) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
