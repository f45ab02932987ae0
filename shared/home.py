"""Where clobi keeps its files on this machine: `$CLOBI_HOME` (default ~/.clobi)."""

from __future__ import annotations

import os
from pathlib import Path


def clobi_home() -> Path:
    home = Path(os.environ.get("CLOBI_HOME") or Path.home() / ".clobi")
    home.mkdir(parents=True, exist_ok=True)
    return home


def sessions_dir() -> Path:
    path = clobi_home() / "sessions"
    path.mkdir(parents=True, exist_ok=True)
    return path


def local_dir() -> Path:
    path = clobi_home() / "local"
    path.mkdir(parents=True, exist_ok=True)
    return path
