"""A bad session config (`clobi session create`) gets one clear error, exit status 1, and
creates nothing: no queue, table or object on the endpoint, no session file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import cli
from tests.reliability.bad_input import LOCAL, assert_one_error_line, contents

HEAD = 'name = "bad"\nendpoint_url = "@ENDPOINT@"\n'
EC2 = '[[clouds]]\nname = "e"\ndriver = "ec2"\nami = "ami-1"\n'

BAD_CONFIGS: list[tuple[str, str | bytes, str]] = [
    ("toml-syntax", HEAD + "priorities = \n", "not valid TOML"),
    ("toml-unclosed-string", 'name = "bad\n', "not valid TOML"),
    ("not-utf8", HEAD.encode() + b'region = "\xff"\n', "not UTF-8"),
    ("unknown-key", HEAD + "priorites = 3\n", "priorites: unknown key"),
    ("unknown-key-in-cloud", HEAD + LOCAL + "cores = 2\n", "clouds.0.cores: unknown key"),
    ("unknown-section", HEAD + "[autoscaling]\nenabled = true\n", "autoscaling: unknown key"),
    ("wrong-type", HEAD + 'priorities = "many"\n', "priorities: "),
    ("wrong-type-in-cloud", HEAD + LOCAL + 'max_vms = "four"\n', "clouds.0.max_vms: "),
    ("wrong-type-releases", HEAD + 'releases = "14.2.10"\n', "releases: "),
    ("wrong-type-clouds", HEAD + "clouds = [1]\n", "clouds.0: "),
    ("priorities-zero", HEAD + "priorities = 0\n", "priorities: "),
    ("priorities-too-many", HEAD + "priorities = 11\n", "priorities: "),
    ("default-priority-above", HEAD + "priorities = 2\ndefault_priority = 3\n", "default_priority"),
    ("lease-too-short", HEAD + "lease_s = 1\n", "lease_s: "),
    ("heartbeat-vs-lease", HEAD + "lease_s = 10\nheartbeat_s = 5\n", "heartbeat_s: "),
    ("max-attempts-zero", HEAD + "max_attempts = 0\n", "max_attempts: "),
    ("cores-zero", HEAD + LOCAL + "cores_per_vm = 0\n", "clouds.0.cores_per_vm: "),
    ("max-vms-negative", HEAD + LOCAL + "max_vms = -1\n", "clouds.0.max_vms: "),
    ("min-above-max", HEAD + LOCAL + "min_vms = 5\nmax_vms = 2\n", "clouds.0: min_vms"),
    ("duplicate-cloud-names", HEAD + LOCAL + LOCAL, "two clouds are named 'l'"),
    ("unknown-driver", HEAD + '[[clouds]]\nname = "g"\ndriver = "gcp"\n', "clouds.0.driver: "),
    ("driver-missing", HEAD + '[[clouds]]\nname = "g"\n', "clouds.0.driver: required"),
    ("cloud-name", HEAD + '[[clouds]]\nname = "My Cloud"\ndriver = "local"\n', "clouds.0.name"),
    ("ec2-without-ami", HEAD + '[[clouds]]\nname = "e"\ndriver = "ec2"\n', "clouds.0.ami: "),
    ("ec2-bad-install", HEAD + EC2 + 'install = "pip"\n', "clouds.0.install: "),
    ("ec2-bad-region", HEAD + EC2 + 'region = "mars"\n', "clouds.0.region: "),
    ("ec2-wheel-missing", HEAD + EC2 + 'install = "wheel"\nwheel = "no.whl"\n', "clouds.0.wheel"),
    ("ec2-endpoint-local", HEAD + EC2 + 'endpoint_url = "local"\n', "clouds.0.endpoint_url: "),
    (
        "release-name-path",
        HEAD + '[releases."../../x"]\nsnapshot = "snap-1234abcd"\n',
        "releases: ",
    ),
    ("release-name-slash", HEAD + '[releases."a/b"]\nsnapshot = "snap-1234abcd"\n', "'a/b'"),
    (
        "release-archive-missing",
        HEAD + '[releases."14.2.10"]\narchive = "no-such.tar.gz"\n',
        "releases.14.2.10.archive: ",
    ),
    (
        "release-image-missing",
        HEAD + '[releases."14.2.10"]\nimage = "no-such.img"\n',
        "releases.14.2.10.image: ",
    ),
    ("release-no-source", HEAD + '[releases."r1"]\n', "releases.r1: "),
    (
        "release-archive-and-image",
        HEAD + '[releases."r1"]\narchive = "a.tgz"\nimage = "a.img"\n',
        "releases.r1: ",
    ),
    (
        "release-bad-snapshot",
        HEAD + '[releases."r1"]\nsnapshot = "snap-xyz"\n',
        "releases.r1.snapshot: ",
    ),
    ("release-unknown-key", HEAD + '[releases."r1"]\nsnap = "snap-1234abcd"\n', "r1.snap: "),
    ("name-missing", 'endpoint_url = "@ENDPOINT@"\n', "name: required key is missing"),
    ("name-uppercase", HEAD.replace("bad", "Bad"), "name: "),
    ("name-too-long", HEAD.replace("bad", "b" * 30), "name: "),
    ("bucket-name", HEAD + 'bucket = "My_Bucket"\n', "bucket: "),
    ("endpoint-not-a-url", 'name = "bad"\nendpoint_url = "not a url"\n', "endpoint_url: "),
    ("endpoint-scheme", 'name = "bad"\nendpoint_url = "ftp://127.0.0.1:1"\n', "endpoint_url: "),
    ("region", HEAD + 'region = "us east 1"\n', "region: "),
    ("autoscale-negative", HEAD + "[autoscale]\nidle_timeout_s = -1\n", "autoscale.idle_timeout_s"),
    ("job-user-shell", HEAD + 'job_user = "nobody; rm -rf /"\n', "job_user: "),
    ("job-user-empty", HEAD + 'job_user = ""\n', "job_user: "),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_session_create_refuses_a_bad_config_in_one_line_and_creates_nothing(
    tmp_path: Path, endpoint: str, clobi_home: Path, text: str | bytes, expected: str
) -> None:
    config = tmp_path / "session.toml"
    if isinstance(text, bytes):
        config.write_bytes(text)
    else:
        config.write_text(text.replace("@ENDPOINT@", endpoint))
    (tmp_path / "a.tgz").write_bytes(b"")
    (tmp_path / "a.img").write_bytes(b"")
    before = contents(endpoint)
    result = cli("session", "create", str(config))
    assert_one_error_line(result, f"clobi: error: {config}: ", expected)
    assert contents(endpoint) == before
    assert not list(clobi_home.glob("sessions/*.json"))


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_session_create_of_an_unreadable_config_is_one_line(
    tmp_path: Path, endpoint: str, what: str
) -> None:
    config = tmp_path / "session.toml"
    if what == "directory":
        config.mkdir()
    before = contents(endpoint)
    assert_one_error_line(cli("session", "create", str(config)), str(config))
    assert contents(endpoint) == before
