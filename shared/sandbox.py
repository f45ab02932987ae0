"""Sandbox archives: deterministic tar.gz on the way in, checked member by member on the way out.

Extraction accepts regular files and directories only, with relative paths inside the
destination, no `..`, no links or devices, and size and count limits. Members with setuid/setgid
bits are refused, not stripped: `pack` never writes them, so such an archive was crafted.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from shared.errors import SandboxError


@dataclass(frozen=True)
class Limits:
    max_members: int = 10_000
    max_member_bytes: int = 4 * 1024**3
    max_total_bytes: int = 16 * 1024**3


DEFAULT_LIMITS = Limits()
# An input sandbox: what a submitter may send, and all an agent extracts of one.
INPUT_LIMITS = Limits(
    max_members=10_000, max_member_bytes=256 * 1024**2, max_total_bytes=256 * 1024**2
)
MAX_NAME_BYTES = 255  # one path component, as Linux file systems allow


def pack(entries: Iterable[tuple[str, Path]]) -> bytes:
    """A tar.gz of (name in archive, local path) pairs; the same files give the same bytes."""
    buffer = io.BytesIO()
    write(entries, buffer)
    return buffer.getvalue()


def write(
    entries: Iterable[tuple[str, Path]],
    out: IO[bytes],
    opened: Iterable[tuple[str, IO[bytes]]] = (),
) -> None:
    """Like `pack`, streaming into a file (for outputs too big to hold in memory). `opened`:
    regular files opened already (by a caller that must not follow a path twice); their size
    and mode are taken from the open file."""
    items: list[tuple[str, Path | IO[bytes]]] = [*entries, *opened]
    with (
        gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, source in sorted(items, key=lambda item: item[0]):
            if isinstance(source, Path):
                _add(tar, name, source)
            else:
                _add_open(tar, name, source)


def _add_open(tar: tarfile.TarFile, name: str, handle: IO[bytes]) -> None:
    status = os.fstat(handle.fileno())
    if not stat.S_ISREG(status.st_mode):
        raise SandboxError(f"{name}: not a regular file")
    info = _info(name)
    info.size = status.st_size
    info.mode = 0o755 if status.st_mode & 0o111 else 0o644
    tar.addfile(info, _Exactly(handle, status.st_size))


class _Exactly:
    """A file read as the size it had when opened: a file that grows meanwhile cannot make
    the archive lie about its members."""

    def __init__(self, handle: IO[bytes], size: int) -> None:
        self._handle, self._left = handle, size

    def read(self, count: int = -1) -> bytes:
        count = self._left if count < 0 else min(count, self._left)
        data = self._handle.read(count)
        data += b"\0" * (count - len(data))  # shrunk meanwhile: padded, as tar would
        self._left -= count
        return data


def _info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add(tar: tarfile.TarFile, name: str, path: Path) -> None:
    if path.is_symlink():
        raise SandboxError(f"{path}: links are not allowed in a sandbox")
    info = _info(name)
    if path.is_dir():
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        for child in sorted(path.iterdir()):
            _add(tar, f"{name}/{child.name}", child)
    elif path.is_file():
        info.size = path.stat().st_size
        info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
        with open(path, "rb") as handle:
            tar.addfile(info, handle)
    else:
        raise SandboxError(f"{path}: not a regular file or directory")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extract(data: bytes | Path, dest: Path, limits: Limits = DEFAULT_LIMITS) -> list[Path]:
    """Check every member, then extract into `dest`; raises SandboxError naming the member.
    Nothing is written through a link that `dest` already holds."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    stream = open(data, "rb") if isinstance(data, Path) else io.BytesIO(data)  # noqa: SIM115
    try:
        with tarfile.open(fileobj=stream, mode="r:*") as tar:
            members = _checked(tar, limits)
            written = []
            for member in members:
                target = _target(root, member)
                try:
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source = tar.extractfile(member)
                    assert source is not None
                    _write_file(source, target, member)
                except OSError as err:  # the file system's refusal, or a corrupt stream
                    raise SandboxError(
                        f"sandbox member {_label(member.name)}: cannot extract: "
                        f"{err.strerror or err}"
                    ) from None
                written.append(target)
            return written
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as err:
        raise SandboxError(f"sandbox archive is unreadable: {_why(err)}") from None
    finally:
        stream.close()


def _target(root: Path, member: tarfile.TarInfo) -> Path:
    """Where a member goes; refused if a link in the destination is on its way."""
    target = root
    for part in PurePosixPath(member.name).parts:
        target = target / part
        if target.is_symlink():
            raise SandboxError(
                f"sandbox member {_label(member.name)}: the destination holds a link at {target}"
            )
    return target


def _write_file(source: IO[bytes], target: Path, member: tarfile.TarInfo) -> None:
    # O_NOFOLLOW: a link that appeared since _target looked is not followed either.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
    with open(os.open(target, flags, 0o600), "wb") as out:
        _copy_limited(source, out, member)
        os.fchmod(out.fileno(), member.mode & 0o755)


def read_members(data: bytes, names: Iterable[str], max_bytes: int) -> dict[str, bytes]:
    """Read a few named regular files of an archive into memory (missing ones are empty);
    one larger than `max_bytes` is refused, not read."""
    wanted = set(names)
    found = dict.fromkeys(wanted, b"")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    if member.size > max_bytes:
                        raise SandboxError(
                            f"sandbox member {_label(member.name)}: larger than {max_bytes} B"
                        )
                    source = tar.extractfile(member)
                    if source is not None:
                        found[member.name] = source.read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise SandboxError(f"result archive is unreadable: {_why(err)}") from None
    return found


def _checked(tar: tarfile.TarFile, limits: Limits) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    kinds: dict[PurePosixPath, bool] = {}  # path -> is a directory, across the archive
    total = 0
    for member in tar:
        if len(members) >= limits.max_members:
            raise SandboxError(
                f"sandbox member {_label(member.name)}: the sandbox has more than "
                f"{limits.max_members} members"
            )
        _check_member(member, limits)
        _check_kind(member, kinds)
        total += member.size
        if total > limits.max_total_bytes:
            raise SandboxError(
                f"sandbox member {_label(member.name)}: the sandbox is larger than "
                f"{limits.max_total_bytes} bytes"
            )
        members.append(member)
    return members


def _check_member(member: tarfile.TarInfo, limits: Limits) -> None:
    name = member.name
    label = _label(name)
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        raise SandboxError(f"sandbox member {label}: absolute path")
    if ".." in path.parts:
        raise SandboxError(f"sandbox member {label}: '..' in path")
    if not (member.isfile() or member.isdir()):
        kind = "link" if member.issym() or member.islnk() else "special file"
        raise SandboxError(f"sandbox member {label}: {kind} not allowed")
    if member.issparse():  # a few bytes of archive that unpack to its whole declared size
        raise SandboxError(f"sandbox member {label}: sparse file not allowed")
    if member.mode & (stat.S_ISUID | stat.S_ISGID):
        raise SandboxError(f"sandbox member {label}: setuid/setgid bit not allowed")
    if member.isfile() and not path.parts:
        raise SandboxError(f"sandbox member {label}: a file without a name")
    if any(len(part.encode()) > MAX_NAME_BYTES for part in path.parts):
        raise SandboxError(f"sandbox member {label}: name longer than {MAX_NAME_BYTES} bytes")
    if member.size > limits.max_member_bytes:
        raise SandboxError(f"sandbox member {label}: larger than {limits.max_member_bytes} B")


def _check_kind(member: tarfile.TarInfo, kinds: dict[PurePosixPath, bool]) -> None:
    """A path is a file or a directory throughout the archive, never both."""
    path = PurePosixPath(member.name)
    for parent in list(path.parents)[:-1]:  # without "."
        if not kinds.setdefault(parent, True):
            raise SandboxError(f"sandbox member {_label(member.name)}: {parent} is a file")
    if path.parts and kinds.setdefault(path, member.isdir()) is not member.isdir():
        raise SandboxError(f"sandbox member {_label(member.name)}: both a file and a directory")


def _why(err: BaseException) -> str:
    """tarfile's reason on one line (having tried each compression, it lists one a line)."""
    lines = str(err).splitlines()
    if len(lines) > 1:
        return "not a tar archive (plain, gz, bz2 or xz)"
    return lines[0] if lines else type(err).__name__


def _label(name: str) -> str:
    """A member name for an error line, cut if it is absurdly long."""
    return repr(name if len(name) <= 100 else name[:97] + "...")


def _copy_limited(source: IO[bytes], out: IO[bytes], member: tarfile.TarInfo) -> None:
    remaining = member.size
    read = source.read
    while True:
        chunk = read(1 << 20)
        if not chunk:
            return
        remaining -= len(chunk)
        if remaining < 0:
            raise SandboxError(f"sandbox member {member.name!r}: longer than its header says")
        out.write(chunk)
