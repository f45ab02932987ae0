"""Where clobi keeps its files on this machine: `$CLOBI_HOME` (default ~/.clobi). Everything
in it is private to its owner: folders 0700, files 0600 (session files, the endpoint's key,
URL and log, bootstraps, agent and job logs, cached sandboxes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO


def clobi_home() -> Path:
    return private_dir(Path(os.environ.get("CLOBI_HOME") or Path.home() / ".clobi"))


def sessions_dir() -> Path:
    return private_dir(clobi_home() / "sessions")


def local_dir() -> Path:
    return private_dir(clobi_home() / "local")


def private_dir(path: Path) -> Path:
    """`path` and any missing parent made 0700 (existing folders are left as they are)."""
    if not path.is_dir():
        private_dir(path.parent)
        path.mkdir(mode=0o700, exist_ok=True)
    return path


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, atomically (a temporary file, renamed)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(text)
    tmp.replace(path)


def append_private(path: Path) -> IO[bytes]:
    """A log file opened for appending, made 0600 if new."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
