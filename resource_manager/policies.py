"""The IAM policies of a session, filled in: what `clobi session policies` prints.

The templates (`resource_manager/iam/*.json`, also at `vm-image/iam/`) say `${region}`,
`${account}`, `${bucket}` and `${session}`; a session fills them with its own names, so the
agent's instance profile and the submitter reach that session's queues, tables and S3 prefix
and nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path
from string import Template
from typing import Any

from shared.aws import Aws, translated
from shared.models import SessionInfo

TEMPLATES = Path(__file__).with_name("iam")
NAMES = ("agent", "resource-manager", "submitter", "bucket")


def account_of(aws: Aws) -> str:
    with translated("read the account id"):
        return str(aws.client("sts").get_caller_identity()["Account"])


def filled(info: SessionInfo, account: str) -> dict[str, dict[str, Any]]:
    """Every policy, by name, with the session's names in place."""
    return {
        name: fill(name, region=info.region, account=account, bucket=info.bucket, session=info.id)
        for name in NAMES
    }


def fill(name: str, *, region: str, account: str, bucket: str, session: str) -> dict[str, Any]:
    """One policy; `session="*"` for a role used across sessions."""
    template = Template((TEMPLATES / f"{name}-policy.json").read_text())
    names = {"region": region, "account": account, "bucket": bucket, "session": session}
    return dict(json.loads(template.substitute(names)))
