import io
import tarfile
from pathlib import Path

import pytest

from shared import sandbox
from shared.errors import SandboxError


def tar_with(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", **attrs: object
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data if kind == tarfile.REGTYPE else None


def test_pack_is_deterministic_and_roundtrips(tmp_path: Path) -> None:
    (tmp_path / "a.sh").write_text("echo hi\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("data")
    entries = [("a.sh", tmp_path / "a.sh"), ("d", tmp_path / "d")]
    first = sandbox.pack(entries)
    assert sandbox.pack(list(reversed(entries))) == first
    out = tmp_path / "out"
    sandbox.extract(first, out)
    assert (out / "a.sh").read_text() == "echo hi\n"
    assert (out / "d" / "f.txt").read_text() == "data"


def test_pack_refuses_links(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/etc/passwd")
    with pytest.raises(SandboxError, match="links"):
        sandbox.pack([("link", tmp_path / "link")])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (member("link", tarfile.SYMTYPE, linkname="/etc/passwd"), "link"),
        (member("hard", tarfile.LNKTYPE, linkname="x"), "link"),
        (member("../../evil"), r"'\.\.'"),
        (member("/abs/path"), "absolute"),
        (member("dev", tarfile.CHRTYPE), "special file"),
        (member("fifo", tarfile.FIFOTYPE), "special file"),
        (member("suid", mode=0o4755), "setuid"),
    ],
)
def test_extract_refuses_unsafe_members_and_writes_nothing(
    tmp_path: Path, bad: tuple[tarfile.TarInfo, bytes | None], message: str
) -> None:
    archive = tar_with(member("ok.txt"), bad)
    dest = tmp_path / "dest"
    with pytest.raises(SandboxError, match=message):
        sandbox.extract(archive, dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_extract_enforces_count_and_size_limits(tmp_path: Path) -> None:
    archive = tar_with(*(member(f"f{i}") for i in range(5)))
    with pytest.raises(SandboxError, match="more than 3 members"):
        sandbox.extract(archive, tmp_path / "a", sandbox.Limits(max_members=3))
    big = tar_with(member("big", data=b"x" * 1000))
    with pytest.raises(SandboxError, match="larger than"):
        sandbox.extract(big, tmp_path / "b", sandbox.Limits(max_member_bytes=100))


def test_extract_names_garbage_as_unreadable(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="unreadable"):
        sandbox.extract(b"not a tar at all", tmp_path / "c")
