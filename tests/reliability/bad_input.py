"""What the bad-input tests share: what "changes nothing" means on the endpoint and on disk,
the one-line error every entry point gives, and crafted sandbox archives."""

from __future__ import annotations

import gzip
import os
import re
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from shared import sandbox
from shared.aws import Aws
from shared.session import Session
from tests.helpers import Result, tar_archive, tar_member

MAX_MEMBERS = sandbox.DEFAULT_LIMITS.max_members

# The smallest valid pieces a bad config or job file is built from.
LOCAL = '[[clouds]]\nname = "l"\ndriver = "local"\n'
JOB = '[[job]]\nscript = "a.sh"\n'


@dataclass(frozen=True)
class Shared:
    session: Session
    file: str  # its session file: `--session FILE` finds it whatever $CLOBI_HOME a test has

    @property
    def arg(self) -> list[str]:
        return ["--session", self.file]


# --- what "changes nothing" means -----------------------------------------------------------


@cache
def _aws(endpoint: str) -> Aws:
    return Aws("us-east-1", endpoint)


def contents(endpoint: str) -> dict[str, Any]:
    """Everything on the endpoint: queues with their message counts, tables with their item
    counts, S3 objects."""
    aws = _aws(endpoint)
    queues = {}
    for url in aws.sqs.list_queues().get("QueueUrls", []):
        attributes = aws.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        queues[url] = sorted(attributes.items())
    tables = {
        name: aws.ddb.scan(TableName=name, Select="COUNT")["Count"]
        for name in aws.ddb.list_tables()["TableNames"]
    }
    objects = {
        bucket["Name"]: sorted(
            o["Key"] for o in aws.s3.list_objects_v2(Bucket=bucket["Name"]).get("Contents", [])
        )
        for bucket in aws.s3.list_buckets()["Buckets"]
    }
    return {"queues": queues, "tables": tables, "objects": objects}


def tree(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int, bytes]]:
    """Every path under root with its type, size and content; but `skip`, what is under it
    and the folders on its way (extraction may create those)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if skip is not None and (here == skip or skip in here.parents):
            continue
        for name in dirnames + filenames:
            path = here / name
            if skip is not None and (path == skip or path in skip.parents):
                continue
            info = path.lstat()
            data = path.read_bytes() if stat.S_ISREG(info.st_mode) else b""
            found[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode), info.st_size, data)
    return found


def assert_one_error_line(result: Result, *expected: str) -> None:
    """Exit status 1, nothing on stdout, one `clobi: error:` line holding every `expected`."""
    assert result.code == 1, result
    assert "Traceback" not in result.err, result.err
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("clobi: error: "), result.err
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert result.out == "", result.out


def assert_usage_error(result: Result) -> None:
    """argparse's way: exit status 2, the usage and one `clobi ...: error:` line last."""
    assert result.code == 2, result
    assert "Traceback" not in result.err, result.err
    assert result.out == ""
    last = result.err.splitlines()[-1]
    assert re.match(r"^clobi( [\w-]+)*: error: ", last), result.err


# --- crafted sandbox archives ---------------------------------------------------------------


def entry(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"evil", **attrs: Any
) -> tuple[tarfile.TarInfo, bytes | None]:
    return tar_member(name, kind, data, **attrs)


def declared_huge(name: str, size: int) -> bytes:
    """A gzip of a few hundred bytes whose one member claims `size` bytes (a header only:
    tarfile would copy all of them)."""
    info = tarfile.TarInfo(name)
    info.size = size
    return gzip.compress(info.tobuf(format=tarfile.PAX_FORMAT) + b"\0" * 1024)


@cache
def many_members(count: int) -> bytes:
    return tar_archive(*(entry(f"f{i}", data=b"") for i in range(count)))


# Built lazily: `outside` is the folder beside the destination, for absolute paths into it.
BAD_ARCHIVES: list[tuple[str, Callable[[Path], bytes], str, str]] = [
    (
        "symlink",
        lambda o: tar_archive(entry("ok"), entry("out", tarfile.SYMTYPE, linkname=str(o))),
        "out",
        "link not allowed",
    ),
    (
        "symlink-then-write-through",
        lambda o: tar_archive(
            entry("d", tarfile.SYMTYPE, linkname=str(o)), entry("d/evil", data=b"through")
        ),
        "d",
        "link not allowed",
    ),
    (
        "hard-link",
        lambda o: tar_archive(entry("ok"), entry("hard", tarfile.LNKTYPE, linkname="ok")),
        "hard",
        "link not allowed",
    ),
    (
        "hard-link-outside",
        lambda o: tar_archive(entry("hard", tarfile.LNKTYPE, linkname=str(o / "victim"))),
        "hard",
        "link not allowed",
    ),
    ("dot-dot", lambda o: tar_archive(entry("ok"), entry("../evil")), "../evil", "'..' in path"),
    ("inner-dot-dot", lambda o: tar_archive(entry("a/../../evil")), "a/../../evil", "'..'"),
    ("dot-dot-dir", lambda o: tar_archive(entry("..", tarfile.DIRTYPE)), "..", "'..' in path"),
    ("absolute", lambda o: tar_archive(entry(str(o / "evil"))), "evil", "absolute path"),
    ("char-device", lambda o: tar_archive(entry("null", tarfile.CHRTYPE)), "null", "special file"),
    ("block-device", lambda o: tar_archive(entry("sda", tarfile.BLKTYPE)), "sda", "special file"),
    ("fifo", lambda o: tar_archive(entry("pipe", tarfile.FIFOTYPE)), "pipe", "special file"),
    ("setuid", lambda o: tar_archive(entry("suid", mode=0o4755)), "suid", "setuid/setgid"),
    ("setgid", lambda o: tar_archive(entry("sgid", mode=0o2755)), "sgid", "setuid/setgid"),
    (
        "setgid-directory",
        lambda o: tar_archive(entry("d", tarfile.DIRTYPE, mode=0o2775)),
        "d",
        "setuid/setgid",
    ),
    ("declared-huge", lambda o: declared_huge("bomb", 2**40), "bomb", "larger than"),
    ("very-many-members", lambda o: many_members(MAX_MEMBERS + 1), f"f{MAX_MEMBERS}", "members"),
    ("no-name", lambda o: tar_archive(entry("")), "''", "without a name"),
    ("name-too-long", lambda o: tar_archive(entry("n" * 300)), "nnnn", "longer than 255"),
    (
        "file-then-directory",
        lambda o: tar_archive(entry("a"), entry("a/b")),
        "a/b",
        "a is a file",
    ),
    (
        "directory-then-file",
        lambda o: tar_archive(entry("a", tarfile.DIRTYPE), entry("a")),
        "'a'",
        "both a file and a directory",
    ),
]


def bad_archive_params() -> list[Any]:
    return [pytest.param(*case[1:], id=case[0]) for case in BAD_ARCHIVES]
