"""shared.sandbox.extract refuses an unsafe archive, as the agent extracts an input sandbox:
links, paths out of the destination, special files, setuid/setgid bits (refused, not
stripped: clobi never packs one, so an archive holding one was crafted) and bombs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from shared import sandbox
from shared.errors import SandboxError
from tests.helpers import tar_archive
from tests.reliability.bad_input import bad_archive_params, entry, tree


@pytest.mark.parametrize(("build", "member", "expected"), bad_archive_params())
def test_extract_refuses_an_unsafe_archive_naming_the_member_and_writes_nothing(
    tmp_path: Path, build: Callable[[Path], bytes], member: str, expected: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("untouched\n")
    dest = tmp_path / "dest"
    data = build(outside)
    before = tree(tmp_path)
    with pytest.raises(SandboxError) as err:
        sandbox.extract(data, dest)
    message = str(err.value)
    assert "\n" not in message and message.startswith("sandbox member '"), message
    assert member in message and expected in message, message
    assert tree(tmp_path, skip=dest) == before, "something was written outside the destination"
    assert list(dest.iterdir()) == [], "the archive was checked before anything was written"


def test_extract_stops_a_gzip_bomb_at_the_total_limit_before_writing(tmp_path: Path) -> None:
    zeros = b"\0" * (1 << 20)  # 1 MiB a member, a few KiB compressed
    data = tar_archive(*(entry(f"z{i}", data=zeros) for i in range(4)))
    assert len(data) < 20_000
    limits = sandbox.Limits(max_total_bytes=3 << 20)
    with pytest.raises(SandboxError, match=r"sandbox member 'z3': the sandbox is larger"):
        sandbox.extract(data, tmp_path / "dest", limits)
    assert list((tmp_path / "dest").iterdir()) == []


def test_extract_never_writes_through_a_link_the_destination_holds(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("untouched\n")
    for name, link in [("out", outside / "victim"), ("sub/victim", outside)]:
        dest = tmp_path / f"dest-{name.replace('/', '-')}"
        dest.mkdir()
        (dest / name.split("/")[0]).symlink_to(link)
        before = tree(outside)
        with pytest.raises(SandboxError, match=f"sandbox member '{name}': the destination holds"):
            sandbox.extract(tar_archive(entry(name, data=b"pwned")), dest)
        assert tree(outside) == before
