"""Sessions through the CLI: init, create, list, show, cleanup; bad configs create nothing."""

from __future__ import annotations

from pathlib import Path

from shared.aws import Aws
from tests.helpers import cli


def leftovers(endpoint: str, session_id: str) -> list[str]:
    """Every queue, table and S3 object of a session still on the endpoint."""
    aws = Aws("us-east-1", endpoint)
    found = [u for u in aws.sqs.list_queues().get("QueueUrls", []) if session_id in u]
    found += [t for t in aws.ddb.list_tables()["TableNames"] if session_id in t]
    buckets = [b["Name"] for b in aws.s3.list_buckets().get("Buckets", [])]
    for bucket in buckets:
        listing = aws.s3.list_objects_v2(Bucket=bucket, Prefix=f"sessions/{session_id}/")
        found += [o["Key"] for o in listing.get("Contents", [])]
    return found


def write_config(tmp_path: Path, endpoint: str, extra: str = "") -> Path:
    (tmp_path / "rel").mkdir(exist_ok=True)
    config = tmp_path / "session.toml"
    config.write_text(
        f'name = "clitest"\nendpoint_url = "{endpoint}"\n{extra}'
        '[[clouds]]\nname = "local"\ndriver = "local"\n'
    )
    return config


def test_init_writes_a_config_that_creates_a_session(tmp_path: Path, aws_endpoint: str) -> None:
    result = cli("session", "init", str(tmp_path / "new"))
    assert result.code == 0, result.err
    text = (tmp_path / "new" / "session.toml").read_text()
    text = text.replace('endpoint_url = "local"', f'endpoint_url = "{aws_endpoint}"')
    (tmp_path / "new" / "session.toml").write_text(text)
    created = cli("session", "create", str(tmp_path / "new" / "session.toml"))
    assert created.code == 0, created.err
    assert created.out.strip().splitlines()[-1].startswith("myjobs-")
    again = cli("session", "init", str(tmp_path / "new"))
    assert again.code == 1 and "exists already" in again.err


def test_create_list_show_cleanup_leaves_nothing_behind(tmp_path: Path, aws_endpoint: str) -> None:
    archive = tmp_path / "rel.tar.gz"
    archive.write_bytes(b"not really a tarball, but uploaded as is")
    config = write_config(tmp_path, aws_endpoint, '[releases."1.0"]\narchive = "rel.tar.gz"\n')
    created = cli("session", "create", str(config))
    assert created.code == 0, created.err
    session_id = created.out.strip().splitlines()[-1]
    assert len(leftovers(aws_endpoint, session_id)) == 4 + 3 + 1  # queues, tables, release

    listed = cli("session", "list", "--json")
    assert [s["id"] for s in listed.json()] == [session_id]
    shown = cli("session", "show", "--json", "--session", session_id)
    assert shown.json()["queue_urls"].keys() == {"p1", "p2", "p3", "dlq"}
    assert "secret" not in shown.out.lower() and "testing" not in shown.out

    cleaned = cli("session", "cleanup", "--yes", "--session", session_id)
    assert cleaned.code == 0, cleaned.err
    assert "4 queues, 3 tables, 1 S3 objects deleted" in cleaned.out
    assert leftovers(aws_endpoint, session_id) == []
    assert cli("session", "list", "--json").json() == []


def test_cleanup_without_yes_and_without_a_terminal_refuses(
    tmp_path: Path, aws_endpoint: str
) -> None:
    session_id = cli("session", "create", str(write_config(tmp_path, aws_endpoint))).out.split()[-1]
    refused = cli("session", "cleanup", "--session", session_id)
    assert refused.code == 1 and "--yes" in refused.err
    assert leftovers(aws_endpoint, session_id)


def test_config_with_unknown_key_fails_in_one_line_and_creates_nothing(
    tmp_path: Path, aws_endpoint: str
) -> None:
    config = write_config(tmp_path, aws_endpoint, "max_atempts = 3\n")
    result = cli("session", "create", str(config))
    assert result.code == 1
    assert result.err.strip().count("\n") == 0
    assert "max_atempts: unknown key" in result.err
    aws = Aws("us-east-1", aws_endpoint)
    assert aws.sqs.list_queues().get("QueueUrls", []) == []
    assert aws.ddb.list_tables()["TableNames"] == []
    assert cli("session", "list", "--json").json() == []


def test_config_with_missing_release_archive_creates_nothing(
    tmp_path: Path, aws_endpoint: str
) -> None:
    config = write_config(tmp_path, aws_endpoint, '[releases."1.0"]\narchive = "gone.tar.gz"\n')
    result = cli("session", "create", str(config))
    assert result.code == 1 and "gone.tar.gz does not exist" in result.err
    assert Aws("us-east-1", aws_endpoint).ddb.list_tables()["TableNames"] == []


def test_unknown_session_is_one_clear_line() -> None:
    result = cli("status", "--session", "nope")
    assert result.code == 1
    assert result.err == "clobi: error: no session 'nope' (see `clobi session list`)\n"


def test_every_command_has_help() -> None:
    for command in (
        ["demo"],
        ["local", "up"],
        ["session", "create"],
        ["vm", "start"],
        ["agent"],
        ["submit"],
        ["status"],
        ["wait"],
        ["cancel"],
        ["fetch"],
        ["logs"],
        ["events"],
    ):
        result = cli(*command, "--help")
        assert result.code == 0
        assert "usage: clobi" in result.out
