"""Session files: JSON under $CLOBI_HOME/sessions/, found by id, path, $CLOBI_SESSION or recency."""

from __future__ import annotations

import os
from pathlib import Path

import pydantic

from shared.errors import SessionNotFound
from shared.home import sessions_dir, write_private
from shared.models import SessionInfo


def path_for(session_id: str) -> Path:
    return sessions_dir() / f"{session_id}.json"


def save(info: SessionInfo) -> Path:
    path = path_for(info.id)
    write_private(path, info.model_dump_json(indent=2) + "\n")
    return path


def remove(session_id: str) -> None:
    path_for(session_id).unlink(missing_ok=True)


def read(path: Path) -> SessionInfo:
    try:
        return SessionInfo.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise SessionNotFound(f"no session file {path}") from None
    except OSError as err:
        raise SessionNotFound(f"{path}: cannot read: {err.strerror}") from None
    except pydantic.ValidationError as err:
        count = err.error_count()
        raise SessionNotFound(f"{path}: not a clobi session file ({count} errors)") from None


def all_sessions() -> list[SessionInfo]:
    """Every session file, oldest first; unreadable files are skipped."""
    infos = []
    for path in sessions_dir().glob("*.json"):
        try:
            infos.append(read(path))
        except SessionNotFound:
            continue
    return sorted(infos, key=lambda info: info.created_at)


def resolve(ref: str | None = None) -> SessionInfo:
    """A session by id or path; else $CLOBI_SESSION; else the most recent one."""
    ref = ref or os.environ.get("CLOBI_SESSION") or None
    if ref is None:
        infos = all_sessions()
        if not infos:
            raise SessionNotFound("no session yet; create one with `clobi session create CONFIG`")
        return infos[-1]
    candidate = Path(ref)
    if candidate.suffix == ".json" or os.sep in ref:
        return read(candidate)
    path = path_for(ref)
    if path.exists():
        return read(path)
    matches = [info for info in all_sessions() if info.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise SessionNotFound(f"session {ref!r} is ambiguous: {', '.join(m.id for m in matches)}")
    raise SessionNotFound(f"no session {ref!r} (see `clobi session list`)")
