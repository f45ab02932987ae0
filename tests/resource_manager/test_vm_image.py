"""vm-image: the agent unit verifies, the user-data is cloud-config with the bootstrap and
no credential, and a wheel session's installer pins clobi by hash."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from resource_manager.lifecycle import create_session
from shared import localkeys
from shared.models import Bootstrap, Ec2Cloud, SessionConfig
from shared.session import Session
from shared.userdata import BOOTSTRAP_PATH, INSTALLER, INSTALLER_PATH, bootstrap_of, render
from tests.helpers import requires_tool

IMAGE = Path(__file__).resolve().parents[2] / "vm-image"


@requires_tool("systemd-analyze")
def test_the_agent_unit_verifies(tmp_path: Path) -> None:
    clobi = shutil.which("clobi")
    assert clobi is not None
    unit = tmp_path / "clobi-agent.service"
    unit.write_text(
        (IMAGE / "clobi-agent.service").read_text().replace("/opt/clobi/bin/clobi", clobi)
    )
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    hardening = set(unit.read_text().splitlines())
    assert {"NoNewPrivileges=true", "ProtectSystem=strict", "PrivateTmp=true"} <= hardening
    assert "User=clobi" in hardening


def test_user_data_is_cloud_config_with_the_bootstrap_and_no_credential(
    tmp_path: Path,
    make_session: Callable[..., Session],
) -> None:
    session = make_session(clouds=(Ec2Cloud(name="aws", driver="ec2", ami="ami-1"),))
    boot = Bootstrap(vm_id="vm-aws-000001", cloud="aws", cores=2, session=session.info)
    user_data = render(boot)
    assert user_data.startswith("#cloud-config\n")
    document = yaml.safe_load(user_data)
    assert {u["name"] for u in document["users"]} == {"clobi", "clobi-job-1", "clobi-job-2"}
    assert document["write_files"][0]["path"] == "/etc/clobi/bootstrap.json"
    assert ["systemctl", "enable", "--now", "clobi-agent.service"] in document["runcmd"]
    # Only the agent's user (and root) reach the metadata service, over IPv4 and IPv6.
    for tool, address in (("iptables", "169.254.169.254"), ("ip6tables", "fd00:ec2::254")):
        rules = [c for c in document["runcmd"] if c[0] == tool and address in c]
        owners = [r[r.index("--uid-owner") + 1] for r in rules if "--uid-owner" in r]
        assert owners == ["root", "clobi"] and all(r[-1] == "ACCEPT" for r in rules[:2])
        assert rules[-1] == [tool, "-A", "OUTPUT", "-d", address, "-j", "REJECT"]
    assert bootstrap_of(user_data) == boot
    assert "install_clobi" not in user_data  # the image has clobi
    assert_no_credential(user_data, boot.model_dump_json())


def assert_no_credential(*texts: str) -> None:
    for secret in (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]):
        for text in texts:
            assert secret not in text


def cloud_init_schema(tmp_path: Path, user_data: str) -> None:
    path = tmp_path / "user-data"
    path.write_text(user_data)
    done = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Valid cloud-config" in done.stdout


@requires_tool("cloud-init")
def test_rendered_user_data_passes_cloud_init_schema(
    tmp_path: Path, make_session: Callable[..., Session]
) -> None:
    session = make_session(clouds=(Ec2Cloud(name="aws", driver="ec2", ami="ami-1"),))
    boot = Bootstrap(vm_id="vm-aws-000001", cloud="aws", cores=2, session=session.info)
    cloud_init_schema(tmp_path, render(boot))


@pytest.fixture
def wheel_session(aws_endpoint: str) -> Session:
    """A session whose EC2 cloud installs clobi at boot: create builds and uploads the wheel."""
    config = SessionConfig(
        name="wheel",
        endpoint_url=aws_endpoint,
        clouds=(Ec2Cloud(name="aws", driver="ec2", ami="ami-1", install="wheel"),),
    )
    return Session(create_session(config))


@requires_tool("cloud-init")
def test_a_wheel_session_installs_clobi_at_boot_pinned_by_hash(
    tmp_path: Path, wheel_session: Session
) -> None:
    wheel = wheel_session.info.agent_wheel
    assert wheel is not None and wheel.filename.startswith("clobi-")
    stored = wheel_session.aws.s3.get_object(Bucket=wheel_session.info.bucket, Key=wheel.key)
    body = stored["Body"].read()
    assert hashlib.sha256(body).hexdigest() == wheel.sha256
    # What a VM installs: moto (the embedded endpoint's) only with the `local` extra.
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = [
            line
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    assert [r for r in requires if "moto" in r and "extra ==" not in r] == [], requires
    assert any(r.startswith("Requires-Dist: boto3") for r in requires)
    boot = Bootstrap(vm_id="vm-aws-000001", cloud="aws", cores=2, session=wheel_session.info)
    user_data = render(boot)
    document = yaml.safe_load(user_data)
    commands = document["runcmd"]
    installer = ["/opt/clobi/bin/python", INSTALLER_PATH, "--bootstrap", BOOTSTRAP_PATH]
    assert commands.index(installer) < commands.index(
        ["systemctl", "enable", "--now", "clobi-agent.service"]
    )
    assert bootstrap_of(user_data) == boot
    assert_no_credential(user_data)
    cloud_init_schema(tmp_path, user_data)

    # The installer, run as cloud-init runs it, against the moto server, into a venv that
    # borrows this environment's dependencies (so pip needs no network).
    venv = tmp_path / "opt-clobi"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    document = json.loads(boot.model_dump_json())
    units = tmp_path / "systemd"

    def run_installer(bootstrap: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "bootstrap.json"
        path.write_text(json.dumps(bootstrap))
        command = [str(venv / "bin" / "python"), str(INSTALLER), "--bootstrap", str(path)]
        # The instance profile's part, played by the endpoint's key (in the environment: the
        # installer is stdlib and boto3 only, and knows nothing of clobi's key file).
        key, secret = localkeys.read(localkeys.default_path()) or ("", "")
        env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret)
        env.pop("PYTHONPATH", None)  # a VM has none; a checkout on it would look installed
        return subprocess.run(
            [*command, "--unit-dir", str(units)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )

    tampered = json.loads(json.dumps(document))
    tampered["session"]["agent_wheel"]["sha256"] = "0" * 64
    refused = run_installer(tampered)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "the session pinned 0000" in refused.stderr
    assert not (venv / "bin" / "clobi").exists() and not units.exists()

    done = run_installer(document)
    assert done.returncode == 0, done.stderr
    assert (venv / "bin" / "clobi").is_file()
    assert (units / "clobi-agent.service").read_text() == (
        IMAGE / "clobi-agent.service"
    ).read_text()
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-c", "import job_agent; print(job_agent.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(venv))  # the wheel's copy, not this checkout's
