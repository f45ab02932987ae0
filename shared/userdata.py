"""EC2 user-data: cloud-config that writes the agent's bootstrap and starts the agent service.

The bootstrap names the session, the VM and the endpoints; it never holds a credential: the
agent gets its AWS access from the instance profile through IMDSv2. When the session uploaded a
clobi wheel (a cloud with `install = "wheel"`), the user-data also installs clobi into
/opt/clobi from that wheel, refusing it unless its sha256 is the pinned one
(`shared/install_clobi.py`); otherwise the image has clobi already (vm-image/clobi.pkr.hcl).
"""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

from shared.models import Bootstrap

BOOTSTRAP_PATH = "/etc/clobi/bootstrap.json"
INSTALLER_PATH = "/etc/clobi/install_clobi.py"
INSTALLER = Path(__file__).with_name("install_clobi.py")

TEMPLATE = """\
#cloud-config
# clobi VM {vm_id} of session {session_id}. No credentials here: IMDSv2 + instance profile.
users:
  - name: clobi
    system: true
    shell: /usr/sbin/nologin
{job_users}write_files:
  - path: {bootstrap_path}
    permissions: "0640"
    owner: root:root
    defer: true
    encoding: gz+b64
    content: {bootstrap_b64}
{install_files}runcmd:
  # only the agent (and root) reach the instance metadata, hence its credentials: no job
{metadata_rules}  - [chown, -R, "root:clobi", /etc/clobi]
{install_commands}  - [systemctl, enable, --now, clobi-agent.service]
"""

INSTALL_FILES = """\
  - path: {installer_path}
    permissions: "0644"
    owner: root:root
    encoding: gz+b64
    content: {installer_b64}
"""

# boto3 first (the installer fetches the wheel with the instance profile), then the pinned wheel.
INSTALL_COMMANDS = """\
  - [python3, -m, venv, /opt/clobi]
  - [/opt/clobi/bin/pip, install, -q, --no-input, boto3]
  - [/opt/clobi/bin/python, {installer_path}, --bootstrap, {bootstrap_path}]
  - [systemctl, daemon-reload]
"""


JOB_USER = """\
  - name: {name}
    system: true
    shell: /usr/sbin/nologin
"""
METADATA = {"iptables": "169.254.169.254", "ip6tables": "fd00:ec2::254"}


def _metadata_rules() -> str:
    rules = []
    for tool, address in METADATA.items():
        for user in ("root", "clobi"):
            rules.append(
                f"[{tool}, -A, OUTPUT, -d, {address}, -m, owner, --uid-owner, {user}, -j, ACCEPT]"
            )
        rules.append(f"[{tool}, -A, OUTPUT, -d, {address}, -j, REJECT]")
    return "".join(f"  - {rule}\n" for rule in rules)


def render(bootstrap: Bootstrap) -> str:
    """The user-data of one VM: with a user per slot (`<job_user>-1..cores`)."""
    job_user = bootstrap.session.config.job_user_on(bootstrap.cloud)
    slots = range(1, bootstrap.cores + 1) if job_user else range(0)
    job_users = "".join(JOB_USER.format(name=f"{job_user}-{n}") for n in slots)
    document = json.dumps(json.loads(bootstrap.model_dump_json()), separators=(",", ":"))
    install_files = install_commands = ""
    if bootstrap.session.agent_wheel is not None:
        paths = {"installer_path": INSTALLER_PATH, "bootstrap_path": BOOTSTRAP_PATH}
        install_files = INSTALL_FILES.format(installer_b64=_packed(INSTALLER.read_text()), **paths)
        install_commands = INSTALL_COMMANDS.format(**paths)
    return TEMPLATE.format(
        vm_id=bootstrap.vm_id,
        session_id=bootstrap.session.id,
        bootstrap_path=BOOTSTRAP_PATH,
        bootstrap_b64=_packed(document),
        install_files=install_files,
        install_commands=install_commands,
        job_users=job_users,
        metadata_rules=_metadata_rules(),
    )


def _packed(text: str) -> str:
    return base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode()


def bootstrap_of(user_data: str) -> Bootstrap:
    """Read the bootstrap back out of rendered user-data (what the agent does at boot)."""
    lines = iter(line.strip() for line in user_data.splitlines())
    if f"- path: {BOOTSTRAP_PATH}" in lines:  # advances to the bootstrap entry
        for line in lines:
            if line.startswith("content: "):
                raw = gzip.decompress(base64.b64decode(line.removeprefix("content: ")))
                return Bootstrap.model_validate_json(raw)
    raise ValueError("user-data holds no clobi bootstrap")
