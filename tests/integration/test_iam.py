"""The IAM policies, enforced: each component does its whole part of an end-to-end run with
only its own policy, and the session-scoped roles are refused another session's resources.

A private moto server with IAM enforcement switched on (`/moto-api/reset-auth`): every request
is signed with the key of an IAM user holding one filled-in policy from resource_manager/iam/.
The Resource Manager (`clobi session create`, `vm start`, `rm --headless`, `session cleanup`)
and the submitter (`clobi submit`, `wait`, `fetch`) run as CLI processes with their own keys;
the agent is a local VM whose cloud names an AWS profile, as an EC2 agent has its instance
profile. The session-scoped roles are refused the queues and objects of another session,
one whose id extends theirs, and within their session the S3 keys that are not theirs to
write (the agent writes results and logs, the submitter input sandboxes).

Moto's limits, and what this test does about them:
- moto authorizes DynamoDB, EC2, IAM and STS calls against the resource "*" (it never computes
  a table ARN), and SQS CreateQueue/ListQueues against "*" too (the queue does not exist yet).
  A policy whose statements name ARNs would be refused every such call, so for moto each
  statement's actions on those services are also granted on "*": the action lists are
  enforced, their resource scoping is not. SQS (queue ARNs) and S3 (bucket and key ARNs) are
  enforced in full, and the cross-session denials below are checked on those.
- Conditions on tags (the EC2 statements) are not evaluated; local VMs make no EC2 call.
- moto asks for `s3:HeadBucket`, an action IAM does not have (AWS checks `s3:ListBucket`);
  it is granted wherever ListBucket is.
- Cleanup runs with enforcement off: moto fails the signature of ListObjectsV2 with a prefix
  (getmoto/moto#5948).
- Bucket policies are not enforced by moto's IAM check; the bucket policy is checked by shape
  in test_iam_policies.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from embedded import server as embedded
from embedded.daemon import signed_request
from resource_manager.drivers.local import kill_session
from resource_manager.iam_policies import fill
from shared import localkeys
from shared.models import SessionInfo
from tests.helpers import wait_until

ACCOUNT = "123456789012"  # moto's
REGION = "us-east-1"
BUCKET = "clobi-iam-test"
UNSCOPED_BY_MOTO = ("dynamodb:", "ec2:", "iam:", "sts:", "sqs:CreateQueue", "sqs:ListQueues")


@pytest.fixture
def guarded_endpoint(tmp_path: Path) -> Iterator[str]:
    proc, url = embedded.launch(
        0,
        ready_file=tmp_path / "ready.json",
        log_file=tmp_path / "endpoint.log",
        credentials=tmp_path / "endpoint-keys",  # the administrator's; no component's
        detach=False,
    )
    yield url
    proc.terminate()
    proc.wait(10)


def for_moto(policy: dict[str, Any]) -> dict[str, Any]:
    """The policy plus, per statement, its actions moto can only check against "*"."""
    statements = list(policy["Statement"])
    for statement in policy["Statement"]:
        actions = statement["Action"]
        actions = [actions] if isinstance(actions, str) else actions
        blind = [a for a in actions if a.startswith(UNSCOPED_BY_MOTO)]
        if blind and statement["Effect"] == "Allow":
            statements.append({"Effect": "Allow", "Action": blind, "Resource": "*"})
        if "s3:ListBucket" in actions:  # AWS authorizes HeadBucket as ListBucket, moto not
            statements.append({**statement, "Sid": "HeadBucket", "Action": "s3:HeadBucket"})
    return {"Version": policy["Version"], "Statement": statements}


class Roles:
    """IAM users with one policy each, created through the IAM API of the moto server."""

    def __init__(self, endpoint: str, admin_keys: Path) -> None:
        self.endpoint = endpoint
        keys = localkeys.read(admin_keys)
        assert keys is not None
        self.admin = keys  # the endpoint's own key: creates the first IAM users
        self.keys: dict[str, tuple[str, str]] = {}

    def iam(self, as_role: str | None) -> Any:
        return self.client("iam", as_role)

    def client(self, service: str, role: str | None) -> Any:
        key, secret = self.keys[role] if role else self.admin
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
        )

    def create(self, name: str, policy: dict[str, Any], by: str | None = None) -> None:
        iam = self.iam(by)
        iam.create_user(UserName=name)
        iam.put_user_policy(
            UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(for_moto(policy))
        )
        key = iam.create_access_key(UserName=name)["AccessKey"]
        self.keys[name] = (key["AccessKeyId"], key["SecretAccessKey"])

    def env(self, role: str, home: Path) -> dict[str, str]:
        key, secret = self.keys[role]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret)
        env["CLOBI_HOME"] = str(home)
        return env


def clobi(env: dict[str, str], *args: str, timeout: float = 60) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "clobi", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"clobi {' '.join(args)}: {done.stderr}"
    return done.stdout


def enforce(endpoint: str, admin: tuple[str, str], after: float) -> None:
    """IAM enforcement on for every request after the next `after` ones (inf: off)."""
    signed_request(endpoint, "/moto-api/reset-auth", admin, "POST", str(after).encode())


def denied(call: Any, **kwargs: Any) -> bool:
    try:
        call(**kwargs)
    except ClientError as err:
        return err.response["Error"]["Code"] in ("AccessDenied", "AccessDeniedException", "403")
    return False


def test_each_component_works_with_its_policy_and_is_denied_other_sessions(
    tmp_path: Path, guarded_endpoint: str
) -> None:
    home = tmp_path / "home"
    roles = Roles(guarded_endpoint, tmp_path / "endpoint-keys")
    every = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    roles.create("admin", every)
    names = {"region": REGION, "account": ACCOUNT, "bucket": BUCKET}
    roles.create("rm", fill("resource-manager", session="*", **names))
    enforce(guarded_endpoint, roles.admin, after=0)
    assert denied(roles.iam("rm").create_user, UserName="intruder")  # enforcement is on

    config = tmp_path / "session.toml"
    config.write_text(
        f'name = "iam"\nendpoint_url = "{guarded_endpoint}"\nbucket = "{BUCKET}"\n'
        "heartbeat_s = 0.5\nlease_s = 6\n"
        '[[clouds]]\nname = "local"\ndriver = "local"\naws_profile = "clobi-agent"\n'
    )
    rm_env = roles.env("rm", home)
    printed = clobi(rm_env, "session", "create", "--print-policies", str(config))
    *policies_json, mine = printed.splitlines()
    policies = json.loads("\n".join(policies_json))
    info = SessionInfo.model_validate_json((home / "sessions" / f"{mine}.json").read_text())
    assert policies["agent"] == fill("agent", session=info, **names)
    # The other session is named after this one's id: its names all extend this one's.
    longer = tmp_path / "longer.toml"
    longer.write_text(config.read_text().replace('name = "iam"', f'name = "{mine}"'))
    other = clobi(rm_env, "session", "create", str(longer)).split()[-1]
    assert other.startswith(f"{mine}-")
    assert (
        json.loads(clobi(rm_env, "session", "policies", "submitter", "--session", mine))
        == (policies["submitter"])
    )
    for role in ("agent", "submitter"):  # as an administrator would, from what create printed
        roles.create(role, policies[role], by="admin")
    credentials = tmp_path / "credentials"
    agent_key, agent_secret = roles.keys["agent"]
    credentials.write_text(
        f"[clobi-agent]\naws_access_key_id = {agent_key}\naws_secret_access_key = {agent_secret}\n"
    )
    rm_env["AWS_SHARED_CREDENTIALS_FILE"] = str(credentials)

    clobi(rm_env, "vm", "start", "local", "--session", mine)
    rm = subprocess.Popen(
        [sys.executable, "-m", "clobi", "rm", "--headless", "--session", mine],
        env=rm_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        script = tmp_path / "job.sh"
        script.write_text("echo hello from $CLOBI_JOB_ID > out.txt\n")
        user = roles.env("submitter", home)
        clobi(
            user,
            "submit",
            "--script",
            str(script),
            "--count",
            "2",
            "--output",
            "out.txt",
            "--session",
            mine,
        )
        clobi(user, "wait", "--timeout", "60", "--session", mine, timeout=90)
        clobi(user, "fetch", "-o", str(tmp_path / "results"), "--session", mine)
        outputs = sorted((tmp_path / "results").glob("*/out.txt"))
        assert len(outputs) == 2 and "hello from" in outputs[0].read_text()
    finally:
        rm.terminate()
        _, rm_errors = rm.communicate(timeout=30)
        if sys.exc_info()[0] is not None:  # failing: no cleanup below, so stop the VM here
            for pid_file in (home / "vms").rglob("pid"):
                kill_session(json.loads(pid_file.read_text())["pid"])
    assert "AccessDenied" not in rm_errors, rm_errors
    console = next((home / "vms").rglob("console.log")).read_text()
    assert "AccessDenied" not in console and "error" not in console.lower(), console

    # The session-scoped roles reach nothing of the other session.
    other_info = json.loads((home / "sessions" / f"{other}.json").read_text())
    queue = other_info["queue_urls"]["p1"]
    prefix = other_info["prefix"]
    for role in ("agent", "submitter"):
        sqs, s3 = roles.client("sqs", role), roles.client("s3", role)
        assert denied(sqs.send_message, QueueUrl=queue, MessageBody="x")
        assert denied(sqs.receive_message, QueueUrl=queue)
        assert denied(s3.put_object, Bucket=BUCKET, Key=f"{prefix}x", Body=b"x")
        assert denied(s3.get_object, Bucket=BUCKET, Key=f"{prefix}x")
    assert denied(roles.client("sqs", "submitter").delete_queue, QueueUrl=queue)
    # Within the session, each role writes only its own kind of S3 key.
    agent_s3, user_s3 = roles.client("s3", "agent"), roles.client("s3", "submitter")
    sandbox = f"{info.prefix}sandboxes/{'0' * 64}.tar.gz"
    assert denied(agent_s3.put_object, Bucket=BUCKET, Key=sandbox, Body=b"x")
    for key in ("jobs/x.0/1/result.tar.gz", "logs/vm-x.log", "releases/sw.tar.gz"):
        assert denied(user_s3.put_object, Bucket=BUCKET, Key=info.prefix + key, Body=b"x")

    # Moto fails the signature of a ListObjectsV2 with a prefix under enforcement
    # (getmoto/moto#5948), and cleanup lists the prefix: it runs with enforcement off.
    enforce(guarded_endpoint, roles.admin, after=float("inf"))
    for session in (mine, other):
        clobi(rm_env, "session", "cleanup", "--yes", "--session", session)
    admin_sqs = roles.client("sqs", "admin")
    assert wait_until(lambda: not admin_sqs.list_queues().get("QueueUrls"), 10, what="no queue")
