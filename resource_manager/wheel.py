"""The clobi wheel a session uploads for EC2 VMs that install clobi at boot (`install = "wheel"`).

The wheel is the configured file, or one built from the source tree clobi runs from. It goes
to the session's S3 prefix; the user-data pins it by its sha256, so a VM installs exactly
what the session uploaded or nothing at all.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

from shared import naming
from shared.aws import Aws, translated
from shared.errors import ConfigError
from shared.models import AgentWheel, Ec2Cloud, SessionConfig

SOURCE_TREE = Path(__file__).resolve().parents[1]


def wheel_clouds(config: SessionConfig) -> list[Ec2Cloud]:
    return [c for c in config.clouds if isinstance(c, Ec2Cloud) and c.install == "wheel"]


def upload_wheel(aws: Aws, config: SessionConfig, prefix: str) -> AgentWheel | None:
    """Upload the wheel if some cloud installs clobi at boot; None if none does."""
    clouds = wheel_clouds(config)
    if not clouds:
        return None
    configured = {c.wheel for c in clouds if c.wheel}
    if len(configured) > 1:
        raise ConfigError("clouds with install = 'wheel' name different wheels; give one")
    with tempfile.TemporaryDirectory(prefix="clobi-wheel-") as scratch:
        path = Path(configured.pop()) if configured else build_wheel(Path(scratch))
        if not path.is_file() or path.suffix != ".whl":
            raise ConfigError(f"wheel {path} is not a wheel file")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        key = naming.wheel_key(prefix, path.name)
        with translated(f"upload wheel {path.name}"):
            aws.s3.upload_file(str(path), config.bucket, key)
    return AgentWheel(key=key, filename=path.name, sha256=digest)


def build_wheel(dest: Path) -> Path:
    """Build the wheel of the clobi source tree this process runs from (pip, no dependencies)."""
    if not (SOURCE_TREE / "pyproject.toml").is_file():
        raise ConfigError(
            "install = 'wheel' needs a clobi source tree to build from, or `wheel = <path>`"
        )
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), SOURCE_TREE],
        capture_output=True,
        text=True,
        check=False,
    )
    wheels = sorted(dest.glob("clobi-*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise ConfigError(f"could not build the clobi wheel: {last}")
    return wheels[0]
