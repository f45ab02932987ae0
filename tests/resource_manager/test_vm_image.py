"""vm-image: the unit verifies, the user-data is cloud-config without credentials, the IAM
policies are well-formed and scoped to one session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from shared.models import Bootstrap, Ec2Cloud
from shared.session import Session
from shared.userdata import bootstrap_of, render

IMAGE = Path(__file__).resolve().parents[2] / "vm-image"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
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
    assert "NoNewPrivileges" in unit.read_text() and "ProtectSystem=strict" in unit.read_text()


def test_user_data_is_cloud_config_with_the_bootstrap_and_no_credential(
    tmp_path: Path,
    make_session: Callable[..., Session],
) -> None:
    session = make_session(clouds=(Ec2Cloud(name="aws", driver="ec2", ami="ami-1"),))
    boot = Bootstrap(vm_id="vm-aws-000001", cloud="aws", cores=2, session=session.info)
    user_data = render(boot)
    assert user_data.startswith("#cloud-config\n")
    document = yaml.safe_load(user_data)
    assert {u["name"] for u in document["users"]} == {"clobi", "clobi-job"}
    assert document["write_files"][0]["path"] == "/etc/clobi/bootstrap.json"
    assert ["systemctl", "enable", "--now", "clobi-agent.service"] in document["runcmd"]
    assert any("169.254.169.254" in command for command in document["runcmd"])
    assert bootstrap_of(user_data) == boot
    for secret in (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in user_data and secret not in boot.model_dump_json()
    if shutil.which("cloud-init"):
        path = tmp_path / "user-data"
        path.write_text(user_data)
        done = subprocess.run(
            ["cloud-init", "schema", "--config-file", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", ["agent", "resource-manager", "submitter"])
def test_the_policies_are_scoped_to_clobi_resources(name: str) -> None:
    policy = json.loads((IMAGE / "iam" / f"{name}-policy.json").read_text())
    for statement in policy["Statement"]:
        resources = statement["Resource"]
        resources = [resources] if isinstance(resources, str) else resources
        scoped = all("clobi" in r or "${bucket}" in r for r in resources)
        assert scoped or "Condition" in statement or statement["Sid"] == "Describe", statement


def test_the_bucket_policy_denies_plain_http_and_unencrypted_uploads() -> None:
    policy = json.loads((IMAGE / "iam" / "bucket-policy.json").read_text())
    denies = {s["Sid"]: s for s in policy["Statement"] if s["Effect"] == "Deny"}
    assert denies["DenyInsecureTransport"]["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}
    }
    assert "s3:x-amz-server-side-encryption" in json.dumps(denies["DenyUnencryptedUploads"])
