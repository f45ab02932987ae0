"""A job's stdout and stderr, capped at `max_log_bytes` while it writes: the job writes into a
pipe the agent reads, and the agent keeps the first `cap` bytes, then a note, and drops the
rest. (A file size limit would also cut the job's own outputs, and kill it with SIGXFSZ.)"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CHUNK = 64 * 1024


def truncation_note(stream: str, cap: int) -> bytes:
    """The line that ends a stream cut at `cap` bytes."""
    return f"\n[clobi: {stream} truncated at {cap} bytes]\n".encode()


class CappedStream:
    """The read end of one stream's pipe and the file it is copied to, up to the cap."""

    def __init__(self, path: Path, cap: int | None) -> None:
        """Makes the pipe and the (empty) file; `write_fd` is the job's end."""
        self.fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.fd, False)
        self._name = path.name
        self._out = open(path, "wb", buffering=0)  # noqa: SIM115 (closed by close())
        self._cap = cap
        self._kept = 0
        self.cut = False
        self.closed = False

    def read(self) -> bool:
        """Copy what the pipe holds now (without blocking); False once every writer is gone."""
        while True:
            try:
                data = os.read(self.fd, CHUNK)
            except BlockingIOError:
                return True
            if not data:
                return False
            self._keep(data)

    def _keep(self, data: bytes) -> None:
        try:
            self._write(data)
        except OSError:  # a full disk, say: drop the rest (the job must not block on it)
            self.cut, self._cap = True, self._kept

    def _write(self, data: bytes) -> None:
        if self._cap is None:
            self._out.write(data)
            self._kept += len(data)
            return
        room = self._cap - self._kept
        if room > 0:
            self._out.write(data[:room])
            self._kept += min(room, len(data))
        if len(data) > room and not self.cut:
            self.cut = True  # the rest is read and dropped, so the job never blocks on it
            self._out.write(truncation_note(self._name, self._cap))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                os.close(self.fd)
            with contextlib.suppress(OSError):  # what a full disk kept from being flushed
                self._out.close()
