"""The IAM policies vm-image ships are well-formed and scoped: the templates to clobi's
resources, the filled ones to one session, by shape (tests/integration/test_iam.py enforces
them)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from resource_manager.iam_policies import fill, filled
from shared import naming
from shared.errors import ConfigError
from shared.models import SessionConfig, SessionInfo

IMAGE = Path(__file__).resolve().parents[2] / "vm-image"


@pytest.mark.parametrize("name", ["agent", "resource-manager", "submitter"])
def test_the_policies_are_scoped_to_clobi_resources(name: str) -> None:
    policy = json.loads((IMAGE / "iam" / f"{name}-policy.json").read_text())
    for statement in policy["Statement"]:
        resources = statement["Resource"]
        resources = [resources] if isinstance(resources, str) else resources
        scoped = all("clobi" in r or "${bucket}" in r for r in resources)
        describe = all(a.startswith("ec2:Describe") for a in actions_of(statement))
        # What a launch only uses (image, subnet...): it creates nothing clobi could not tag.
        uses = actions_of(statement) == ["ec2:RunInstances"] and not any(
            ":instance/" in r or ":volume/" in r for r in resources
        )
        assert scoped or "Condition" in statement or describe or uses, statement


NAMES = {"region": "us-east-1", "account": "123456789012", "bucket": "clobi-sessions"}
MINE = "a-250101-1200-abcd"
SNAPSHOT = "snap-0123456789abcdef0"


def info_of(session_id: str, snapshots: dict[str, str] | None = None) -> SessionInfo:
    """A session's info with the names `clobi session create` gives it (3 priorities)."""
    config = SessionConfig(name="a")
    lanes = {f"p{p}": naming.queue_name(session_id, p) for p in range(1, config.priorities + 1)}
    lanes["dlq"] = naming.dlq_name(session_id)
    return SessionInfo(
        id=session_id,
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
        region=NAMES["region"],
        endpoint_url=None,
        bucket=NAMES["bucket"],
        prefix=naming.session_prefix(session_id),
        queue_urls={k: f"https://sqs.us-east-1.amazonaws.com/123/{q}" for k, q in lanes.items()},
        tables={kind: naming.table_name(session_id, kind) for kind in naming.TABLE_KINDS},
        snapshots=snapshots or {},
        config=config,
    )


def actions_of(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else list(actions)


def resources_of(statement: dict[str, Any]) -> list[str]:
    resources = statement["Resource"]
    return [resources] if isinstance(resources, str) else list(resources)


def iam_match(pattern: str, value: str) -> bool:
    """IAM's wildcards: `*` any run of characters (`/` and `:` included), `?` one."""
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, value) is not None


def allowing(policy: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [
        s
        for s in policy["Statement"]
        if s["Effect"] == "Allow" and any(iam_match(a, action) for a in actions_of(s))
    ]


def reaches(policy: dict[str, Any], action: str, arn: str) -> bool:
    """Whether some Allow statement grants `action` on `arn` (conditions aside)."""
    statements = allowing(policy, action)
    return any(iam_match(r, arn) for s in statements for r in resources_of(s))


def arns_of(info: SessionInfo) -> dict[str, str]:
    region, account = NAMES["region"], NAMES["account"]
    arns = {
        lane: f"arn:aws:sqs:{region}:{account}:{url.rsplit('/', 1)[-1]}"
        for lane, url in info.queue_urls.items()
    }
    for kind, table in info.tables.items():
        arns[kind] = f"arn:aws:dynamodb:{region}:{account}:table/{table}"
    arns["objects"] = f"arn:aws:s3:::{info.bucket}/{info.prefix}sandboxes/x.tar.gz"
    return arns


def test_a_session_whose_id_extends_anothers_is_named_by_no_resource() -> None:
    mine = info_of(MINE)
    longer = info_of(f"{MINE}-x-250102-0900-ef01")  # a session named after mine's id
    own = arns_of(mine)
    for name in ("agent", "submitter"):
        policy = filled(mine, NAMES["account"])[name]
        granted = [r for s in policy["Statement"] for r in resources_of(s)]
        for what, arn in arns_of(longer).items():
            assert not any(iam_match(r, arn) for r in granted), (name, what, arn)
        assert all(any(iam_match(r, own[f"p{p}"]) for r in granted) for p in (1, 2, 3)), name
        assert all(any(iam_match(r, own[kind]) for r in granted) for kind in ("jobs", "events"))
    assert reaches(filled(mine, NAMES["account"])["agent"], "sqs:SendMessage", own["dlq"])


def test_fill_takes_a_session_info_or_every_session() -> None:
    for name in ("agent", "submitter", "resource-manager", "bucket"):
        across = fill(name, session="*", **NAMES)
        assert "${" not in json.dumps(across)
        assert not reaches(across, "s3:GetObject", "arn:aws:s3:::clobi-sessions/elsewhere/x")
    across = fill("agent", session="*", **NAMES)
    assert reaches(across, "sqs:ReceiveMessage", arns_of(info_of(MINE))["p3"])
    assert reaches(across, "ec2:CreateVolume", f"arn:aws:ec2:eu-west-1::snapshot/{SNAPSHOT}")
    with pytest.raises(ValueError):
        fill("agent", session=MINE, **NAMES)  # a bare id cannot name the session's queues
    odd = info_of(MINE).model_copy(update={"tables": {"jobs": "t", "vms": "v", "events": "e"}})
    with pytest.raises(ConfigError, match="tables"):
        fill("agent", session=odd, **NAMES)


def test_the_agent_writes_only_results_and_logs_and_the_submitter_only_sandboxes() -> None:
    policies = filled(info_of(MINE), NAMES["account"])
    prefix = naming.session_prefix(MINE)
    attempt = naming.attempt_prefix(prefix, naming.job_id("1a2b3c4d", 0), 2)
    results = [attempt + naming.RESULT_ARCHIVE, attempt + "stdout", attempt + "stderr"]
    results.append(naming.agent_log_key(prefix, "vm-aws-0a1b2c"))
    inputs = [
        naming.sandbox_key(prefix, "0" * 64),
        naming.release_key(prefix, "sw"),
        naming.release_key(prefix, "sw", image=True),
        naming.wheel_key(prefix, "clobi-1.0-py3-none-any.whl"),
    ]
    for key in results + inputs:
        arn = f"arn:aws:s3:::clobi-sessions/{key}"
        assert reaches(policies["agent"], "s3:PutObject", arn) == (key in results), key
        assert reaches(policies["agent"], "s3:GetObject", arn) == (key in inputs), key
        sandbox = "/sandboxes/" in key
        assert reaches(policies["submitter"], "s3:PutObject", arn) == sandbox, key
        assert reaches(policies["submitter"], "s3:GetObject", arn), key


def test_the_submitter_lists_its_own_prefix_only() -> None:
    """Without ListBucket a first upload's HeadObject is refused (403), not missed (404)."""
    (listing,) = allowing(filled(info_of(MINE), NAMES["account"])["submitter"], "s3:ListBucket")
    assert listing["Resource"] == "arn:aws:s3:::clobi-sessions"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": f"sessions/{MINE}/*"}}


def test_the_agent_cannot_put_jobs_and_lost_rights_it_never_used() -> None:
    agent = filled(info_of(MINE), NAMES["account"])["agent"]
    arns = arns_of(info_of(MINE))
    assert not reaches(agent, "dynamodb:PutItem", arns["jobs"])  # no forged job items
    assert reaches(agent, "dynamodb:UpdateItem", arns["jobs"])  # claims, leases, outcomes
    assert reaches(agent, "dynamodb:PutItem", arns["events"])  # in the outcome's transaction
    assert not reaches(agent, "dynamodb:PutItem", arns["vms"])  # registers by UpdateItem
    granted = {a for s in agent["Statement"] for a in actions_of(s)}
    assert not granted & {"dynamodb:BatchWriteItem", "sqs:GetQueueAttributes", "dynamodb:Scan"}
    assert not reaches(agent, "sqs:ReceiveMessage", arns["dlq"])


def test_volumes_come_only_from_the_sessions_own_snapshots() -> None:
    agent = filled(info_of(MINE, {"sw": SNAPSHOT}), NAMES["account"])["agent"]
    (from_snapshots,) = [
        s for s in allowing(agent, "ec2:CreateVolume") if "snapshot/" in json.dumps(s)
    ]
    assert resources_of(from_snapshots) == [f"arn:aws:ec2:*::snapshot/{SNAPSHOT}"]
    assert from_snapshots["Condition"] == {"StringEquals": {"ec2:Owner": NAMES["account"]}}
    assert not reaches(agent, "ec2:CreateVolume", "arn:aws:ec2:us-east-1::snapshot/snap-0badc0de")
    tagged = [s for s in allowing(agent, "ec2:CreateVolume") if s is not from_snapshots]
    assert tagged[0]["Condition"] == {"StringLike": {"aws:RequestTag/clobi:session": MINE}}
    # A session without ebs releases gets no EC2 right at all.
    plain = filled(info_of(MINE), NAMES["account"])["agent"]
    assert not [a for s in plain["Statement"] for a in actions_of(s) if a.startswith("ec2:")]


def test_the_resource_manager_tags_only_what_it_launches() -> None:
    """So it cannot tag someone else's instance with `clobi:session` and then terminate it."""
    manager = filled(info_of(MINE), NAMES["account"])["resource-manager"]
    tagging = allowing(manager, "ec2:CreateTags")
    assert tagging
    for statement in tagging:
        assert statement["Condition"] == {"StringEquals": {"ec2:CreateAction": "RunInstances"}}
    (terminate,) = allowing(manager, "ec2:TerminateInstances")
    assert resources_of(terminate) == ["arn:aws:ec2:*:123456789012:instance/*"]
    assert terminate["Condition"] == {"StringLike": {"aws:ResourceTag/clobi:session": "*"}}
    (delete,) = allowing(manager, "ec2:DeleteVolume")
    assert delete["Condition"]["Null"] == {"aws:ResourceTag/clobi:release": "false"}


def test_the_bucket_policy_denies_plain_http_and_other_encryption() -> None:
    policy = json.loads((IMAGE / "iam" / "bucket-policy.json").read_text())
    denies = {s["Sid"]: s for s in policy["Statement"] if s["Effect"] == "Deny"}
    assert denies["DenyInsecureTransport"]["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}
    }
    assert "s3:x-amz-server-side-encryption" in json.dumps(denies["DenyOtherEncryption"])


def test_the_resource_manager_launches_tagged_instances_and_volumes_only() -> None:
    """AWS's pattern: the created resources (instance, volume) under the request-tag condition,
    what a launch only uses (image, subnet, groups, interface, key pair) in its own statement."""
    manager = filled(info_of(MINE), NAMES["account"])["resource-manager"]
    launching = allowing(manager, "ec2:RunInstances")
    (tagged,) = [s for s in launching if "Condition" in s]
    (used,) = [s for s in launching if "Condition" not in s]
    account = NAMES["account"]
    assert resources_of(tagged) == [
        f"arn:aws:ec2:*:{account}:instance/*",
        f"arn:aws:ec2:*:{account}:volume/*",
    ]
    assert tagged["Condition"] == {"StringLike": {"aws:RequestTag/clobi:session": "*"}}
    kinds = {r.split(":", 5)[5].split("/")[0] for r in resources_of(used)}
    assert kinds == {
        "image",
        "subnet",
        "security-group",
        "network-interface",
        "key-pair",
        "spot-instances-request",
    }
    for kind in ("instance", "volume"):  # never without the tag
        arn = f"arn:aws:ec2:us-east-1:{account}:{kind}/i-0123"
        assert not any(iam_match(r, arn) for r in resources_of(used))
    assert reaches(manager, "ec2:RunInstances", "arn:aws:ec2:us-east-1::image/ami-0123")
