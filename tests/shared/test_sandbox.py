import tarfile
from pathlib import Path

import pytest

from shared import sandbox
from shared.errors import SandboxError
from tests.helpers import tar_archive, tar_member


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
        (tar_member("link", tarfile.SYMTYPE, linkname="/etc/passwd"), "link"),
        (tar_member("hard", tarfile.LNKTYPE, linkname="x"), "link"),
        (tar_member("../../evil"), r"'\.\.'"),
        (tar_member("/abs/path"), "absolute"),
        (tar_member("dev", tarfile.CHRTYPE), "special file"),
        (tar_member("fifo", tarfile.FIFOTYPE), "special file"),
        (tar_member("suid", mode=0o4755), "setuid"),
    ],
)
def test_extract_refuses_unsafe_members_and_writes_nothing(
    tmp_path: Path, bad: tuple[tarfile.TarInfo, bytes | None], message: str
) -> None:
    archive = tar_archive(tar_member("ok.txt"), bad)
    dest = tmp_path / "dest"
    with pytest.raises(SandboxError, match=message):
        sandbox.extract(archive, dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_extract_enforces_count_and_size_limits(tmp_path: Path) -> None:
    archive = tar_archive(*(tar_member(f"f{i}") for i in range(5)))
    with pytest.raises(SandboxError, match="more than 3 members"):
        sandbox.extract(archive, tmp_path / "a", sandbox.Limits(max_members=3))
    big = tar_archive(tar_member("big", data=b"x" * 1000))
    with pytest.raises(SandboxError, match="larger than"):
        sandbox.extract(big, tmp_path / "b", sandbox.Limits(max_member_bytes=100))


def test_extract_names_garbage_as_unreadable(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="unreadable"):
        sandbox.extract(b"not a tar at all", tmp_path / "c")
