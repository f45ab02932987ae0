"""EC2 user-data: cloud-config that writes the agent's bootstrap and starts the agent service.

The bootstrap names the session, the VM and the endpoints; it never holds a credential: the
agent gets its AWS access from the instance profile through IMDSv2.
"""

from __future__ import annotations

import base64
import gzip
import json

from shared.models import Bootstrap

BOOTSTRAP_PATH = "/etc/clobi/bootstrap.json"

TEMPLATE = """\
#cloud-config
# clobi VM {vm_id} of session {session_id}. No credentials here: IMDSv2 + instance profile.
users:
  - name: clobi
    system: true
    shell: /usr/sbin/nologin
  - name: clobi-job
    system: true
    shell: /usr/sbin/nologin
write_files:
  - path: {bootstrap_path}
    permissions: "0640"
    owner: root:root
    defer: true
    encoding: gz+b64
    content: {bootstrap_b64}
runcmd:
  # jobs (run as clobi-job) cannot reach the instance metadata, hence not its credentials
  - [iptables, -A, OUTPUT, -m, owner, --uid-owner, clobi-job, -d, 169.254.169.254, -j, REJECT]
  - [chown, -R, "root:clobi", /etc/clobi]
  - [systemctl, enable, --now, clobi-agent.service]
"""


def render(bootstrap: Bootstrap) -> str:
    """The user-data of one VM (the image has clobi and its agent unit installed)."""
    document = json.dumps(json.loads(bootstrap.model_dump_json()), separators=(",", ":"))
    packed = base64.b64encode(gzip.compress(document.encode(), mtime=0)).decode()
    return TEMPLATE.format(
        vm_id=bootstrap.vm_id,
        session_id=bootstrap.session.id,
        bootstrap_path=BOOTSTRAP_PATH,
        bootstrap_b64=packed,
    )


def bootstrap_of(user_data: str) -> Bootstrap:
    """Read the bootstrap back out of rendered user-data (what the agent does at boot)."""
    for line in user_data.splitlines():
        stripped = line.strip()
        if stripped.startswith("content: "):
            raw = gzip.decompress(base64.b64decode(stripped.removeprefix("content: ")))
            return Bootstrap.model_validate_json(raw)
    raise ValueError("user-data holds no clobi bootstrap")
