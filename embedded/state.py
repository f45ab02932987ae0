"""The embedded endpoint's durable state under `$CLOBI_HOME/local/state/`: the last snapshot
plus journal segments of the changes acknowledged since; restored at start, compacted into a
new snapshot by a forked child as the journal grows (design: docs/design.md)."""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedded import changes, snapshot
from embedded.journal import Journal, fsync_dir, read_records
from shared.errors import EndpointError
from shared.home import private_dir, write_private

log = logging.getLogger(__name__)
FORMAT = 1  # of the files below; a snapshot also needs the moto version that wrote it
COMPACT_BYTES = 16 * 1024**2  # a journal segment past this, or COMPACT_RECORDS, is compacted
COMPACT_RECORDS = 5000  # replaying a record costs about a request: this bounds a restore
SPOOL_BYTES = 1024**2  # an S3 body past this is kept in a file under tmp/
_NUMBERED = re.compile(r"^(snapshot|journal)-(\d{8})\.(pickle|log)$")


class StateRefused(EndpointError):
    """State this endpoint cannot read (another version's, or damaged): left as it is."""


@dataclass(frozen=True)
class StateInfo:
    """What `clobi local status` shows of the state."""

    path: str
    bytes: int
    snapshot_age_s: float | None


def moto_version() -> str:
    import moto

    return str(moto.__version__)


def info(root: Path) -> StateInfo:
    """The state's size on disk and the age of its last snapshot. Never raises."""
    total, newest = 0, None
    for path in root.rglob("*") if root.is_dir() else ():
        try:
            stat = path.stat()
        except OSError:
            continue
        if path.is_file() and "tmp" not in path.relative_to(root).parts[:1]:
            total += stat.st_size
            if _NUMBERED.match(path.name) and path.name.startswith("snapshot"):
                newest = max(newest or 0.0, stat.st_mtime)
    age = None if newest is None else max(0.0, time.time() - newest)
    return StateInfo(str(root), total, age)


def last_port(root: Path) -> int | None:
    """The port the state was last served on (the one its sessions know), if any."""
    try:
        return int(json.loads((root / "format.json").read_text())["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class DurableState:
    """The journal of the running endpoint. `record` runs under the request lock, `wait`
    outside it; `restore` before serving, `close` after."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._check_format()
        self.segment = 0
        self.journal: Journal | None = None
        self._compacting: threading.Thread | None = None
        self.tmp = root / "tmp"  # moto's spooled S3 bodies: on disk, not in memory

    def _check_format(self) -> None:
        meta = self.root / "format.json"
        try:
            found = json.loads(meta.read_text())
        except FileNotFoundError:
            if any(_NUMBERED.match(p.name) for p in self.root.glob("*")):
                raise StateRefused(
                    f"the endpoint's state at {self.root} has no format.json: "
                    "left as it is; move it away to start empty"
                ) from None
            return
        except ValueError as err:
            raise StateRefused(
                f"the endpoint's state at {self.root} is damaged ({meta}: "
                f"{err}): left as it is; move it away to start empty"
            ) from err
        wanted = {"format": FORMAT, "moto": moto_version()}
        have = {"format": found.get("format"), "moto": found.get("moto")}
        if have != wanted:
            raise StateRefused(
                f"the endpoint's state at {self.root} was written by state format "
                f"{have['format']} with moto {have['moto']}, and this is format {FORMAT} with "
                f"moto {wanted['moto']}: left as it is; start it with that version, or move "
                "the folder away to start empty"
            )

    def _numbered(self, kind: str) -> list[int]:
        found = (_NUMBERED.match(p.name) for p in self.root.glob(f"{kind}-*"))
        return sorted(int(m.group(2)) for m in found if m and m.group(1) == kind)

    def _path(self, kind: str, number: int) -> Path:
        return self.root / f"{kind}-{number:08d}.{'pickle' if kind == 'snapshot' else 'log'}"

    def _blobs(self, kind: str, number: int) -> Path:
        return self.root / f"{kind}-{number:08d}.blobs"

    def restore(self, app: changes.App, port: int) -> int:
        """Load the last snapshot, replay the journal after it, open a new segment; returns
        how many records were replayed. Raises StateRefused."""
        private_dir(self.root)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(mode=0o700)
        tempfile.tempdir = str(self.tmp)
        os.environ.setdefault("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", str(SPOOL_BYTES))
        snapshots = self._numbered("snapshot")
        base = snapshots[-1] if snapshots else 0
        began = time.monotonic()
        replayed = 0
        try:
            if snapshots:
                snapshot.load(self._path("snapshot", base), self._blobs("snapshot", base))
            for number in self._numbered("journal"):
                if number >= base:
                    blobs = self._blobs("journal", number)
                    for record in read_records(self._path("journal", number)):
                        changes.replay(app, record, blobs)
                        replayed += 1
        except Exception as err:  # whatever a foreign or damaged pickle raises
            raise StateRefused(
                f"the endpoint's state at {self.root} cannot be read "
                f"({type(err).__name__}: {err}): left as it is"
            ) from err
        gc.freeze()  # what was restored lives on: the collector need not walk it again
        meta = {"format": FORMAT, "moto": moto_version(), "port": port}
        write_private(self.root / "format.json", json.dumps(meta))
        numbers = self._numbered("journal") + snapshots
        self._open(max(numbers, default=0) + 1)
        log.info(
            "state restored from %s in %.2f s: snapshot %d, %d journal records",
            self.root,
            time.monotonic() - began,
            base,
            replayed,
        )
        if replayed:
            self._compact()
        return replayed

    def _open(self, number: int) -> None:
        self.segment = number
        self.journal = Journal(self._path("journal", number))
        fsync_dir(self.root)

    def record(
        self, environ: dict[str, Any], body: bytes, op: str, status: str, payload: bytes
    ) -> tuple[Journal, int]:
        """Journal a request moto has just answered (under the request lock): what `wait`
        needs to return once it, and every change before it, is on disk."""
        journal = self.journal
        assert journal is not None, "restore() first"
        blobs = self._blobs("journal", self.segment)
        entry = changes.record_of(environ, body, op, status, payload, blobs)
        if entry is None:
            return journal, journal.written  # a read waits for what it may have seen
        seq = journal.append(entry)
        if journal.bytes > COMPACT_BYTES or journal.records > COMPACT_RECORDS:
            self._compact()
        return journal, seq

    @staticmethod
    def wait(pending: tuple[Journal, int]) -> None:
        journal, seq = pending
        journal.sync(seq)

    def _compact(self) -> None:
        """Start a new segment and let a forked child write the snapshot of everything
        before it (moto is not changing: we hold the request lock, or serve nothing yet)."""
        if self._compacting is not None and self._compacting.is_alive():
            return
        old = self.journal
        assert old is not None
        self._open(self.segment + 1)
        old.close()  # synced: a request waiting on it returns at once
        number = self.segment
        pid = os.fork()
        if pid == 0:  # the child: write, and leave without running anything of the parent's
            gc.disable()
            _close_sockets()
            code = 1
            try:
                snapshot.dump(self._path("snapshot", number), self._blobs("snapshot", number))
                fsync_dir(self.root)
                code = 0
            finally:
                os._exit(code)
        self._compacting = threading.Thread(
            target=self._reap, args=(pid, number), name="compaction", daemon=True
        )
        self._compacting.start()

    def _reap(self, pid: int, number: int) -> None:
        """Wait for the child; once its snapshot is durable drop what it replaces."""
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            log.error("compaction into snapshot %d failed; the journal is kept", number)
            return
        for kind in ("snapshot", "journal"):
            for old in self._numbered(kind):
                if old < number:
                    self._path(kind, old).unlink(missing_ok=True)
                    shutil.rmtree(self._blobs(kind, old), ignore_errors=True)
        fsync_dir(self.root)
        log.info("compacted into snapshot %d", number)

    def close(self) -> None:
        """At shutdown: the journal synced and closed, a running compaction waited for."""
        if self.journal is not None:
            self.journal.close()
        if self._compacting is not None:
            self._compacting.join()


def _close_sockets() -> None:
    """In a compaction child: let go of the server's sockets, so that the port is free and
    nothing waits on it as soon as the endpoint is gone, whatever the child is doing."""
    for name in os.listdir("/proc/self/fd"):
        try:
            if stat.S_ISSOCK(os.fstat(int(name)).st_mode):
                os.close(int(name))
        except OSError:
            continue
