"""The IAM policies of a session, filled in: what `clobi session policies` prints.

The templates (`resource_manager/iam/*.json`, also at `vm-image/iam/`) say `${region}`,
`${account}`, `${bucket}` and `${session}`, and name every queue and table whole
(`clobi-${session}-jobs`, never `clobi-${session}-*`, which would also match a session whose id
extends this one's). Two more placeholders stand for lists: a Resource holding `${priority}` is
repeated for each of the session's priority queues (1..N), one holding `${snapshot}` for each
EBS snapshot its releases name. Statements whose Sid starts with `Ebs` are for `ebs` releases
only and are left out of a session that has none.

A session fills them from its SessionInfo, so the agent's instance profile and the submitter
reach that session's queues, tables and S3 keys and nothing else. `session="*"` fills them for a
role used across sessions: every clobi queue, table and prefix, any snapshot of the account.
The Resource Manager's policy always spans sessions: it creates them, so it cannot name them.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from string import Template
from typing import Any

from shared import naming
from shared.aws import Aws, translated
from shared.errors import ConfigError
from shared.models import SessionInfo

TEMPLATES = Path(__file__).with_name("iam")
NAMES = ("agent", "resource-manager", "submitter", "bucket")
EVERY_SESSION = "*"
EBS_ONLY = "Ebs"  # the Sid prefix of statements only `ebs` releases need
LISTS = ("priority", "snapshot")
SESSION_ID = re.compile(r"[a-z0-9][a-z0-9-]*")  # no IAM wildcard (`*`, `?`) can hide in it
SNAPSHOT_ID = re.compile(r"snap-[0-9a-f]{8,17}")


def account_of(aws: Aws) -> str:
    with translated("read the account id"):
        return str(aws.client("sts").get_caller_identity()["Account"])


def filled(info: SessionInfo, account: str) -> dict[str, dict[str, Any]]:
    """Every policy, by name, with the session's names in place."""
    return {
        name: fill(name, region=info.region, account=account, bucket=info.bucket, session=info)
        for name in NAMES
    }


def fill(
    name: str, *, region: str, account: str, bucket: str, session: SessionInfo | str
) -> dict[str, Any]:
    """One policy, for one session (its SessionInfo) or `session="*"`, a role used across
    sessions. Raises ConfigError for a session whose names are not clobi's own."""
    if isinstance(session, SessionInfo):
        session_id = _checked(session)
        lists = {
            "priority": _priorities(session),
            "snapshot": sorted(set(session.snapshots.values())),
        }
    elif session == EVERY_SESSION:
        session_id, lists = EVERY_SESSION, {"priority": ["*"], "snapshot": ["*"]}
    else:
        raise ValueError(f"fill a policy from a session's SessionInfo, or for {EVERY_SESSION!r}")
    names = {"region": region, "account": account, "bucket": bucket, "session": session_id}
    template = json.loads((TEMPLATES / f"{name}-policy.json").read_text())
    statements = []
    for statement in template["Statement"]:
        if statement.get("Sid", "").startswith(EBS_ONLY) and not lists["snapshot"]:
            continue
        done = {k: v if k == "Resource" else _substitute(v, names) for k, v in statement.items()}
        if "Resource" in statement:
            resources = _resources(statement["Resource"], names, lists)
            if not resources:
                continue  # a list placeholder with nothing to name: the statement grants nothing
            single = isinstance(statement["Resource"], str) and len(resources) == 1
            done["Resource"] = resources[0] if single else resources
        statements.append(done)
    return {**{k: v for k, v in template.items() if k != "Statement"}, "Statement": statements}


def _resources(
    value: str | list[str], names: dict[str, str], lists: dict[str, list[str]]
) -> list[str]:
    out: list[str] = []
    for resource in [value] if isinstance(value, str) else value:
        used = [key for key in LISTS if f"${{{key}}}" in resource]
        for combination in itertools.product(*(lists[key] for key in used)):
            out.append(
                Template(resource).substitute(names, **dict(zip(used, combination, strict=True)))
            )
    return out


def _substitute(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return Template(value).substitute(names)
    if isinstance(value, list):
        return [_substitute(v, names) for v in value]
    if isinstance(value, dict):
        return {_substitute(k, names): _substitute(v, names) for k, v in value.items()}
    return value


def _priorities(info: SessionInfo) -> list[str]:
    return [str(p) for p in range(1, info.config.priorities + 1)]


def _checked(info: SessionInfo) -> str:
    """The session's id, once its queues, tables, prefix and snapshots are known to have the
    names the templates spell out (they are made from `shared.naming`, so they do)."""
    sid = info.id
    expected = {f"p{p}": naming.queue_name(sid, int(p)) for p in _priorities(info)}
    expected["dlq"] = naming.dlq_name(sid)
    queues = {name: url.rsplit("/", 1)[-1] for name, url in info.queue_urls.items()}
    tables = {kind: naming.table_name(sid, kind) for kind in naming.TABLE_KINDS}
    problems = [
        what
        for what, ok in (
            ("session id", SESSION_ID.fullmatch(sid) is not None),
            ("queues", queues == expected),
            ("tables", info.tables == tables),
            ("prefix", info.prefix == naming.session_prefix(sid)),
            ("snapshots", all(SNAPSHOT_ID.fullmatch(s) for s in info.snapshots.values())),
        )
        if not ok
    ]
    if problems:
        raise ConfigError(
            f"session {sid!r}: unexpected {', '.join(problems)}: no policy names them"
        )
    return sid
