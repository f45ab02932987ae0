"""How an agent learns who it is: a bootstrap file, or EC2 user-data read through IMDSv2."""

from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pydantic

from shared.errors import ClobiError, ConfigError
from shared.models import Bootstrap
from shared.userdata import bootstrap_of

IMDS_DEFAULT = "http://169.254.169.254"


def imds_endpoint() -> str:
    """The metadata endpoint; overridable as boto3 allows, so tests can run a fake one."""
    return os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", IMDS_DEFAULT).rstrip("/")


def imds_get(path: str, timeout_s: float = 2.0) -> str | None:
    """GET a metadata path with an IMDSv2 token; None when it does not exist (404)."""
    base = imds_endpoint()
    token_request = urllib.request.Request(
        f"{base}/latest/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"},
    )
    with urllib.request.urlopen(token_request, timeout=timeout_s) as response:
        token = response.read().decode()
    request = urllib.request.Request(
        f"{base}/latest/{path}", headers={"X-aws-ec2-metadata-token": token}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


def spot_interrupted() -> bool:
    """Whether EC2 announced a spot interruption of this instance (never raises)."""
    try:
        return imds_get("meta-data/spot/instance-action", timeout_s=1.0) is not None
    except OSError:
        return False


@dataclass(frozen=True)
class InstanceIdentity:
    """Where this EC2 instance is: what EBS volumes are attached to, and created in."""

    instance_id: str
    zone: str


def instance_identity() -> InstanceIdentity:
    """This instance's id and availability zone from IMDSv2. Blocks briefly; raises ClobiError."""
    try:
        instance_id = imds_get("meta-data/instance-id")
        zone = imds_get("meta-data/placement/availability-zone")
    except OSError as err:
        raise ClobiError(f"no instance metadata at {imds_endpoint()} ({err})") from None
    if not instance_id or not zone:
        raise ClobiError("instance metadata gives no instance id or availability zone")
    return InstanceIdentity(instance_id.strip(), zone.strip())


def parse_bootstrap(text: str | bytes, source: str) -> Bootstrap:
    try:
        return Bootstrap.model_validate_json(text)
    except pydantic.ValidationError as err:
        raise ConfigError(f"{source}: not a valid bootstrap ({err.error_count()} errors)") from None


def load_bootstrap(path: Path | None) -> Bootstrap:
    if path is not None:
        try:
            return parse_bootstrap(path.read_bytes(), str(path))
        except OSError as err:
            raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        user_data = imds_get("user-data")
    except OSError as err:
        raise ConfigError(
            f"no --bootstrap given and no instance metadata at {imds_endpoint()} ({err})"
        ) from None
    if user_data is None:
        raise ConfigError("instance metadata has no user-data")
    return parse_bootstrap(extract_bootstrap(user_data), "user-data")


def extract_bootstrap(user_data: str) -> str:
    """User-data is the bootstrap JSON itself, or the cloud-config the EC2 driver renders."""
    text = user_data.strip()
    if text.startswith("{"):
        return text
    try:
        return bootstrap_of(text).model_dump_json()
    except ValueError:
        raise ConfigError("user-data holds no clobi bootstrap") from None
